"""Token ids, labels and turn ids of conversations, against hand-written sequences and against
upstream's preprocess_llada / preprocess_plain / tokenizer_image_token re-run with transformers."""

import copy
import functools
import json

import numpy as np
import pytest

from lladav_jax.data import ChatEncoder, Tokenizer, parse_record, records, tokenizer_image_token
from lladav_jax.data.chat_format import DEFAULT_SYSTEM_PROMPT
from lladav_jax.data.tokenizer import TokenizerError
from lladav_jax.tokens import IGNORE_LABEL as X, IMAGE_PLACEHOLDER_ID as IMG
from tests.data.conftest import conversation
from tests.data.tiny_tokenizer import build_backend, save_tokenizer_dir

BOS, EOS, SH, EH, EOT = 126080, 126081, 126346, 126347, 126348
# Upstream's training chat template (preprocess_llada overrides the tokenizer's).
UPSTREAM_TRAIN_TEMPLATE = (
    "{% for message in messages %}{{'<|startoftext|>' + '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>' + '\n\n' + message['content'] + '<|eot_id|>'}}{% endfor %}{% if add_generation_prompt %}"
    "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}")


@functools.lru_cache(maxsize=1)
def _backend():
  return build_backend()


def ids_of(*tokens):
  return [_backend().token_to_id(t) for t in tokens]


@functools.lru_cache(maxsize=4)
def _encoder(tokenizer):
  return ChatEncoder(tokenizer)


@pytest.fixture(scope="module")
def tokenizer_pairs(tokenizer_dir, tmp_path_factory):
  """Ours and transformers', for the byte-level tokenizer and for one with a "\n\n" token."""
  from transformers import PreTrainedTokenizerFast
  pairs = {}
  for newline_pair_token in (False, True):
    directory = (save_tokenizer_dir(str(tmp_path_factory.mktemp("nl")), newline_pair_token=True)
                 if newline_pair_token else tokenizer_dir)
    pairs[newline_pair_token] = (Tokenizer.from_dir(directory), PreTrainedTokenizerFast.from_pretrained(directory))
  return pairs


def test_tokenizer_directory_loads_like_transformers(tokenizer, hf_tokenizer):
  assert len(tokenizer) == len(hf_tokenizer) == 126349
  assert (tokenizer.bos_id, tokenizer.eos_id, tokenizer.pad_id) == (BOS, EOS, EOS) == (
      hf_tokenizer.bos_token_id, hf_tokenizer.eos_token_id, hf_tokenizer.pad_token_id)
  for text in ["What is this?", "<|startoftext|>x<|eot_id|>\n\nA cat.", "", " /think", "\n\n\n", "ünï ☃"]:
    assert tokenizer.encode(text) == hf_tokenizer(text).input_ids
    assert tokenizer.encode(text, add_special_tokens=False) == hf_tokenizer.encode(text, add_special_tokens=False)
  for token in ["<|eot_id|>", "\n\n", "ĊĊ", "What", "nope"]:
    assert tokenizer.token_to_id(token) == hf_tokenizer.convert_tokens_to_ids(token)
  ids = tokenizer.encode("A cat on the mat.\n")
  assert tokenizer.decode(ids) == hf_tokenizer.decode(ids) == "A cat on the mat.\n"


def test_tokenizer_directory_errors_name_the_file(tmp_path):
  with pytest.raises(TokenizerError, match="no tokenizer.json"):
    Tokenizer.from_dir(tmp_path)
  save_tokenizer_dir(str(tmp_path))
  (tmp_path / "special_tokens_map.json").write_text('{"eos_token": "<|nope|>"}')
  with pytest.raises(TokenizerError, match="eos_token '<\\|nope\\|>' is not in the vocabulary"):
    Tokenizer.from_dir(tmp_path)


def _encode(encoder, record_json, system=DEFAULT_SYSTEM_PROMPT):
  record = parse_record(record_json, "r")
  messages = records.move_image_to_front(record.messages) if record.has_visual else list(record.messages)
  own_system, turns = records.llada_turns(record, messages)
  return encoder.encode_llada(turns, has_visual=record.has_visual, system_prompt=own_system or system)


def test_multi_turn_conversation_matches_the_hand_written_sequence(tokenizer):
  record = {"image": "a.jpg", "conversations": [
      {"from": "human", "value": "What is this?<image>"}, {"from": "gpt", "value": "A cat on the mat."},
      {"from": "human", "value": "What is the color?"}, {"from": "gpt", "value": "A red cat."}]}
  encoder = ChatEncoder(tokenizer)
  ids, labels = _encode(encoder, json.dumps(record), system="You are a helpful assistant.")
  # The byte-level pre-tokenizer splits "\n\nYou" as "\n", "\n", "You"; a lone "\n\n" (before the special
  # <image>) is one piece, merged to "ĊĊ".
  system = [BOS, SH, *ids_of("system"), EH, *ids_of("Ċ", "Ċ", "You", "Ġare", "Ġa", "Ġhelpful", "Ġassistant", "."),
            EOT]
  # preprocess_multimodal moved <image> to the front, followed by "\n".
  user1 = [SH, *ids_of("user"), EH, *ids_of("ĊĊ"), IMG, *ids_of("Ċ", "What", "Ġis", "Ġthis", "?"), EOT]
  answer1 = [SH, *ids_of("assistant"), EH, *ids_of("Ċ", "Ċ", "A", "Ġcat", "Ġon", "Ġthe", "Ġmat", "."), EOT]
  user2 = [SH, *ids_of("user"), EH, *ids_of("Ċ", "Ċ", "What", "Ġis", "Ġthe", "Ġcolor", "?"), EOT]
  answer2 = [SH, *ids_of("assistant"), EH, *ids_of("Ċ", "Ċ", "A", "Ġred", "Ġcat", "."), EOT]
  assert ids.tolist() == system + user1 + answer1 + user2 + answer2

  def prompt_labels(part):  # only BOS / header / eot ids stay targets ("\n\n" has no vocabulary entry here)
    return [t if t in (BOS, SH, EH, EOT) else X for t in part]
  assert labels.tolist() == (prompt_labels(system) + prompt_labels(user1) + answer1 + prompt_labels(user2)
                             + answer2)
  turns = encoder.turn_ids(labels)
  first_round = len(system) + len(user1) + len(answer1)
  assert turns.tolist() == [0] * first_round + [1] * (len(user2) + len(answer2))


def test_plain_format_matches_the_hand_written_sequence(tokenizer):
  encoder = ChatEncoder(tokenizer)
  record = parse_record(json.dumps(conversation("Describe the image.\n<image>", "A cat on the mat.", image="a.jpg")),
                        "r")
  prompt, caption = records.plain_pair(record, records.move_image_to_front(record.messages))
  ids, labels = encoder.encode_plain(prompt, caption)
  caption_ids = ids_of("A", "Ġcat", "Ġon", "Ġthe", "Ġmat", ".", "Ċ")
  assert ids.tolist() == [IMG] + caption_ids
  assert labels.tolist() == [X] + caption_ids
  assert encoder.turn_ids(labels).tolist() == [0] * len(ids)


def test_turn_ids_follow_upstream_rounds_and_cut_messages(tokenizer):
  encoder = ChatEncoder(tokenizer)
  a = ids_of("assistant")[0]
  # system | user | assistant | user | user | assistant | user (cut: no <|eot_id|>) | padding
  labels = np.array([BOS, SH, X, EH, X, EOT,  SH, X, EH, X, EOT,  SH, a, EH, 5, EOT,  SH, X, EH, EOT,
                     SH, X, EH, EOT,  SH, a, EH, 7, EOT,  SH, X, EH, X, X,  EOS, X])
  # BOS, system, user, assistant: turn 0; from the user after the assistant on: turn 1 (cut and padding too).
  expected = [0] * 16 + [1] * 20
  assert encoder.turn_ids(labels).tolist() == expected


def _upstream_tokenizer_image_token(hf, prompt):
  """mm_utils.tokenizer_image_token, as written upstream."""
  chunks = [hf(chunk).input_ids for chunk in prompt.split("<image>")]
  input_ids, offset = [], 0
  if chunks and chunks[0] and chunks[0][0] == hf.bos_token_id:
    offset = 1
    input_ids.append(chunks[0][0])
  separated = [e for pair in zip(chunks, [[IMG] * (offset + 1)] * len(chunks)) for e in pair][:-1]
  for x in separated:
    input_ids.extend(x[offset:])
  return input_ids


_COPIES = {}


def _upstream_tokenizer_copy(hf, has_image):
  """preprocess_llada's deepcopy of the tokenizer, with <image> added when the record has an image."""
  key = (id(hf), has_image)
  if key not in _COPIES:
    tok = copy.deepcopy(hf)
    if has_image:
      tok.add_tokens(["<image>"], special_tokens=True)
    _COPIES[key] = (hf, tok)  # hf kept alive so its id stays unique
  return _COPIES[key][1]


def _upstream_preprocess_llada(hf, source, has_image, system=DEFAULT_SYSTEM_PROMPT):
  """train.py preprocess_llada for one source (from/value messages), as written upstream."""
  tok = _upstream_tokenizer_copy(hf, has_image)
  image_token_index = tok.convert_tokens_to_ids("<image>")
  unmask = [tok.convert_tokens_to_ids(t) for t in
            ["<|startoftext|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>", "\n\n"]]
  tok.chat_template = UPSTREAM_TRAIN_TEMPLATE
  roles = {"human": "user", "gpt": "assistant"}
  if roles[source[0]["from"]] != roles["human"]:
    source = source[1:]
  input_id = tok.apply_chat_template([{"role": "system", "content": system}], return_dict=False)
  target = [X] * len(input_id)
  for conv in source:
    role = roles.get(conv["from"], conv["from"])
    encoded = tok.apply_chat_template([{"role": role, "content": conv["value"]}], return_dict=False)[1:]
    input_id += encoded
    target += [X] * len(encoded) if role in ["user", "system"] else encoded
  for i, t in enumerate(input_id):
    if t in unmask:
      target[i] = t
    if t == image_token_index:
      input_id[i] = IMG
  return input_id, target


def _upstream_preprocess_multimodal(source):
  for sentence in source:
    if sentence["value"].count("<image>") == 1 and not sentence["value"].startswith("<image>"):
      sentence["value"] = ("<image>\n" + sentence["value"].replace("<image>", "").strip()).strip()
    sentence["value"] = sentence["value"].replace("QA_GT_caption_based_noisy", "")
  return source


CASES = [
    conversation("<image>\nWhat is this?", "A cat.", image="a.jpg"),
    conversation("What is   this? <image>  ", "  A cat.\n\nIt is red.  ", image="a.jpg"),
    {"image": ["a.jpg", "b.jpg"], "conversations": [
        {"from": "human", "value": "Compare <image> and <image>."}, {"from": "gpt", "value": "A cat and a dog."},
        {"from": "human", "value": "What color?\n\nThe first."}, {"from": "gpt", "value": "Red."}]},
    conversation("Hi there!", "Hello.\n\nWhat is this?"),  # text only
    {"image": "a.jpg", "conversations": [{"from": "gpt", "value": "dropped"}, {"from": "human", "value": "<image>"},
                                         {"from": "gpt", "value": "A cat QA_GT_caption_based_noisy."}]},
    {"video": "v.mp4", "conversations": [{"from": "human", "value": "Describe <image> /think"},
                                         {"from": "gpt", "value": "A dog."}]},
    # No assistant text: upstream trains on the structural tokens (and the empty answer's header).
    conversation("<image>\nWhat is this?", "", image="a.jpg"),
    conversation("Hi there!", "  \n"),
    {"conversations": [{"from": "human", "value": "Only a question."}]},
]


@pytest.mark.parametrize("newline_pair_token", [False, True])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_llava_llada_sequences_equal_upstream_preprocess(case, newline_pair_token, tokenizer_pairs):
  tokenizer, hf = tokenizer_pairs[newline_pair_token]
  record = CASES[case]
  has_image = "image" in record or "video" in record
  source = copy.deepcopy(record["conversations"])
  if has_image:
    source = _upstream_preprocess_multimodal(source)
  expected_ids, expected_labels = _upstream_preprocess_llada(hf, source, has_image)
  ids, labels = _encode(_encoder(tokenizer), json.dumps(record))
  assert ids.tolist() == expected_ids
  assert labels.tolist() == expected_labels
  if newline_pair_token:  # the "\n\n" token of the user turn is a target there, as upstream keeps it
    pair = tokenizer.token_to_id("\n\n")
    assert pair is not None and (labels[ids == pair] == pair).all() and (ids == pair).sum() >= 2


@pytest.mark.parametrize("prompt", ["<image>A cat on the mat.\n", "<image>\n", "<|startoftext|>x<image>\nWhat?<image> y",
                                    "no image at all", "<image><image>Two."])
def test_tokenizer_image_token_equals_upstream(prompt, tokenizer, hf_tokenizer):
  assert tokenizer_image_token(tokenizer, prompt) == _upstream_tokenizer_image_token(hf_tokenizer, prompt)


def test_plain_sequences_equal_upstream_preprocess_plain(tokenizer, hf_tokenizer):
  for caption in ["A cat on the mat.", "  two  spaces \n\n", "ünï ☃", ""]:  # "": only the separator is a target
    conversation_text = "<image>" + caption + "\n"  # preprocess_plain with conv_llada_plain (sep "\n")
    expected = _upstream_tokenizer_image_token(hf_tokenizer, conversation_text)
    expected_labels = list(expected)
    prompt_length = len(_upstream_tokenizer_image_token(hf_tokenizer, "<image>"))
    expected_labels[:prompt_length] = [X] * prompt_length
    record = parse_record(json.dumps(conversation("Describe.\n<image>", caption, image="a.jpg")), "r")
    ids, labels = ChatEncoder(tokenizer).encode_plain(*records.plain_pair(record, record.messages))
    assert ids.tolist() == expected and labels.tolist() == expected_labels


def test_token_ids_are_checked_against_the_model_config(tokenizer):
  from lladav_jax.tokens import TokenIds
  tokenizer.check_token_ids(TokenIds())  # LLaDA's ids
  with pytest.raises(TokenizerError, match="the mask token has id 126336, the model config expects 511"):
    tokenizer.check_token_ids(TokenIds(mask=511))
  with pytest.raises(TokenizerError, match="the eot token has id 126348"):
    tokenizer.check_token_ids(TokenIds(eot=504))

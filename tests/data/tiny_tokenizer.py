"""A small tokenizer laid out like LLaDA's, saved as a Hugging Face directory.

Byte-level BPE (every string encodes), a few whole-word merges so test sentences become short known
token lists, filler entries up to id 126079, then the 269 added tokens of the LLaDA tokenizer at their
real ids (126080 <|startoftext|> ... 126348 <|eot_id|>), 126349 entries in all. The config files
mirror the checkpoint's (PreTrainedTokenizerFast, pad = eos, no unk, add_bos_token false).
"""

import json
import os

import tokenizers
from tokenizers import decoders, models, pre_tokenizers

FIRST_ADDED_ID = 126080
NAMED_ADDED = {
    126080: "<|startoftext|>", 126081: "<|endoftext|>", 126082: "[CLS]", 126083: "[gMASK]",
    126336: "<|mdm_mask|>", 126340: "<role>", 126341: "</role>", 126342: "<|arithmetic_start|>",
    126343: "<|arithmetic_end|>", 126344: "<|number_start|>", 126345: "<|number_end|>",
    126346: "<|start_header_id|>", 126347: "<|end_header_id|>", 126348: "<|eot_id|>",
}
LAST_ADDED_ID = 126348
# Whole words (as they appear after byte-level pre-tokenisation: "Ġ" is a space, "Ċ" a newline).
WORDS = ("system", "user", "assistant", "You", "Ġare", "Ġa", "Ġhelpful", "Ġassistant", ".", "What", "Ġis",
         "Ġthis", "?", "A", "Ġcat", "Ġon", "Ġmat", "Ġdog", "Ġand", "Ġthe", "Ġcolor", "Describe", "Ġimage",
         "Ġred", "Ġblue", "Ċ", "ĊĊ", "Ġ/", "think", "no", "Ġpicture", "Ġphoto", "It", "Ġ", "Hi",
         "Hello", "Ġthere", "!", "Compare", "Ġimages")


def bytes_to_unicode() -> dict[int, str]:
  """GPT-2's reversible byte -> printable character map used by byte-level BPE."""
  printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
      list(range(ord("®"), ord("ÿ") + 1))
  chars = printable[:]
  n = 0
  for b in range(256):
    if b not in printable:
      printable.append(b)
      chars.append(256 + n)
      n += 1
  return dict(zip(printable, map(chr, chars)))


def added_token_names() -> dict[int, str]:
  return {i: NAMED_ADDED.get(i, f"<|reserved_token_{i - 126084}|>") for i in range(FIRST_ADDED_ID, LAST_ADDED_ID + 1)}


def build_backend(newline_pair_token: bool = False) -> tokenizers.Tokenizer:
  """`newline_pair_token` adds "\\n\\n" as an added (non-special) token after the others: a byte-level
  vocabulary has no entry spelled "\\n\\n", this one does, so upstream's `convert_tokens_to_ids("\\n\\n")`
  finds an id and keeps it as a target everywhere."""
  vocab: dict[str, int] = {}
  merges: list[tuple[str, str]] = []
  for ch in bytes_to_unicode().values():
    vocab.setdefault(ch, len(vocab))
  # Words after a space first: their chains then win over the chains of the same letters without one.
  for word in sorted(WORDS, key=lambda w: not w.startswith("Ġ")):
    for end in range(2, len(word) + 1):  # a left-to-right merge chain spells the word
      left, right = word[:end - 1], word[end - 1]
      if word[:end] not in vocab:
        merges.append((left, right))
        vocab[word[:end]] = len(vocab)
  filler = 0
  while len(vocab) < FIRST_ADDED_ID:
    vocab[f"<filler_{filler}>"] = len(vocab)
    filler += 1
  backend = tokenizers.Tokenizer(models.BPE(vocab=vocab, merges=merges))
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  backend.decoder = decoders.ByteLevel()
  names = added_token_names()
  backend.add_special_tokens([tokenizers.AddedToken(names[i], special=True, normalized=False)
                              for i in range(FIRST_ADDED_ID, LAST_ADDED_ID + 1)])
  assert backend.token_to_id("<|eot_id|>") == 126348 and backend.get_vocab_size() == 126349
  if newline_pair_token:
    backend.add_tokens([tokenizers.AddedToken("\n\n", special=False, normalized=False)])
  return backend


def save_tokenizer_dir(path: str, newline_pair_token: bool = False) -> str:
  """Writes tokenizer.json, tokenizer_config.json and special_tokens_map.json; returns `path`."""
  os.makedirs(path, exist_ok=True)
  build_backend(newline_pair_token).save(os.path.join(path, "tokenizer.json"))
  entry = dict(lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
  config = {
      "add_bos_token": False, "add_eos_token": False,
      "added_tokens_decoder": {str(i): dict(content=name, **entry) for i, name in added_token_names().items()},
      "bos_token": "<|startoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
      "cls_token": "[CLS]", "clean_up_tokenization_spaces": False, "model_max_length": 10 ** 30,
      "tokenizer_class": "PreTrainedTokenizerFast",
      "chat_template": ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
                        "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim"
                        " + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
                        "{{ content }}{% endfor %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"),
  }
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump(config, f)
  token = dict(lstrip=False, normalized=False, rstrip=False, single_word=False)
  special_map = {"bos_token": dict(content="<|startoftext|>", **token),
                 "eos_token": dict(content="<|endoftext|>", **token),
                 "pad_token": dict(content="<|endoftext|>", **token)}
  with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
    json.dump(special_map, f)
  return path

"""Generation prompts, against a hand-written sequence and against upstream's inference path re-run with
transformers (the checkpoint's own chat template, then tokenizer_image_token)."""

import pytest

from lladav_jax.data import build_chat_prompt, build_prompt
from lladav_jax.data.prompts import build_scored_prompt
from lladav_jax.data.chat_format import DEFAULT_SYSTEM_PROMPT
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID as IMG
from tests.data.test_chat_format import BOS, EH, EOT, SH, _upstream_tokenizer_image_token, ids_of


def _upstream_prompt(hf, turns, system=DEFAULT_SYSTEM_PROMPT):
  """conv_templates["llava_llada"].get_prompt(): the tokenizer's chat template with a system turn and
  the generation prompt, messages with empty content skipped; then tokenizer_image_token."""
  messages = [{"role": "system", "content": system}] + [{"role": r, "content": c} for r, c in turns if c]
  text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
  return _upstream_tokenizer_image_token(hf, text)


def _eval_question(context, n_images, think_mode=None):
  """lmms-eval llava_onevision_llada: image tokens in front of a context that has none."""
  question = " ".join(["<image>"] * n_images) + "\n" + context
  if think_mode == "no_think":
    question += " /no_think"
  elif think_mode == "think":
    question += " /think"
  return question


def test_single_image_prompt_matches_the_hand_written_sequence(tokenizer):
  head = [BOS, SH, *ids_of("system"), EH, *ids_of("Ċ", "Ċ", "You", "Ġare", "Ġa", "Ġhelpful", "Ġassistant", "."), EOT,
          SH, *ids_of("user"), EH, *ids_of("ĊĊ"), IMG]
  tail = [*ids_of("What", "Ġis", "Ġthis", "?"), EOT, SH, *ids_of("assistant"), EH, *ids_of("ĊĊ")]
  system = "You are a helpful assistant."
  # Upstream's tokenizer_image_token drops the "\n" after <image>; the training-style encoding keeps it.
  assert build_prompt(tokenizer, "What is this?", 1, system_prompt=system) == head + tail
  assert build_prompt(tokenizer, "What is this?", 1, system_prompt=system,
                      keep_image_newline=True) == head + ids_of("Ċ") + tail


@pytest.mark.parametrize("context,n_images,think", [
    ("What is this?", 1, None), ("Compare them.", 2, "think"), ("  Hi there!  ", 0, None),
    ("Describe the image.", 1, "no_think"), ("What is the color?\n\nA. red\nB. blue", 3, None)])
def test_prompts_equal_upstream_inference_path(context, n_images, think, tokenizer, hf_tokenizer):
  question = _eval_question(context, n_images, think) if n_images else context + (" /think" if think else "")
  expected = _upstream_prompt(hf_tokenizer, [("user", question)])
  assert build_prompt(tokenizer, context, n_images, think=think) == expected
  assert build_prompt(tokenizer, question, n_images) == expected  # placeholders already in the question


def test_chat_prompt_equals_upstream_multi_turn(tokenizer, hf_tokenizer):
  turns = [("user", "<image>\nWhat is this?"), ("assistant", "A cat on the mat.  "), ("user", "What is the color?")]
  assert build_chat_prompt(tokenizer, turns) == _upstream_prompt(hf_tokenizer, turns)
  system = "You are a helpful assistant."
  as_dicts = [{"role": r, "content": c} for r, c in turns]
  assert build_chat_prompt(tokenizer, as_dicts, system_prompt=system) == _upstream_prompt(hf_tokenizer, turns, system)


@pytest.mark.parametrize("context,answer,n_images", [
    ("What is this?", " A", 1), ("Compare them.", "the left one ", 2), ("2 + 2 =", "4", 0),
    ("<image>\nWhich?", "B.", 1)])
def test_scored_prompt_equals_upstream_loglikelihood(context, answer, n_images, tokenizer, hf_tokenizer):
  """lmms-eval llava_onevision_llada.loglikelihood: placeholders without a think tag, then the prompt once
  with the continuation as the assistant message (the template trims it and adds the generation prompt
  after it); the labels are the ids after the prompt."""
  question = context if n_images == 0 or "<image>" in context else _eval_question(context, n_images)
  prompt, full = build_scored_prompt(tokenizer, context, answer, n_images)
  assert prompt == _upstream_prompt(hf_tokenizer, [("user", question)])
  assert full == _upstream_prompt(hf_tokenizer, [("user", question), ("assistant", answer)])
  # Labels are cut at the prompt's length; they end with the generation prompt the template repeats.
  assert full[-5:] == [EOT, SH, *ids_of("assistant"), EH, *ids_of("ĊĊ")] and len(full) > len(prompt) + 5


def test_prompt_errors():
  with pytest.raises(ValueError, match="holds 1 <image> placeholder"):
    build_prompt(None, "<image>\nWhat?", 2)
  with pytest.raises(ValueError, match="think 'maybe'"):
    build_prompt(None, "What?", 0, think="maybe")
  with pytest.raises(ValueError, match="must end with a user message"):
    build_chat_prompt(None, [("user", "Hi"), ("assistant", "Hello")])

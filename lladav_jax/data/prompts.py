"""Prompt token ids for generation, built as upstream's inference path builds them.

Upstream (generate_demo.py, eval lmms-eval llava_onevision_llada.py): the question gets
" ".join(["<image>"] * n) + "\\n" in front when it has no `<image>` of its own (and " /think" or
" /no_think" at the end in the stage-3 think modes), goes into conv_templates["llava_llada"], whose
`get_prompt` renders the tokenizer's chat template:
  <|startoftext|><|start_header_id|>system<|end_header_id|>\\n\\n{system}<|eot_id|>
  <|start_header_id|>user<|end_header_id|>\\n\\n{question}<|eot_id|>   (contents trimmed, empty ones skipped)
  <|start_header_id|>assistant<|end_header_id|>\\n\\n
and `tokenizer_image_token` encodes it, which drops the token right after each `<image>` (the "\\n").
`keep_image_newline=True` encodes the same text as training does instead (the "\\n" stays).
"""

from typing import Mapping, Sequence

from lladav_jax.data.chat_format import DEFAULT_SYSTEM_PROMPT, tokenizer_image_token
from lladav_jax.data.records import ASSISTANT, SYSTEM, USER, Message
from lladav_jax.data.tokenizer import END_HEADER_TEXT, EOT_TEXT, IMAGE_TEXT, START_HEADER_TEXT, Tokenizer
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID

THINK_TAGS = {"think": " /think", "no_think": " /no_think"}


def _header(role: str) -> str:
  return f"{START_HEADER_TEXT}{role}{END_HEADER_TEXT}\n\n"


def render_chat(tokenizer: Tokenizer, messages: Sequence[Message], system_prompt: str | None = None) -> str:
  """The checkpoint's chat template with the generation prompt (what upstream's `get_prompt` returns)."""
  system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
  bos = tokenizer.special_tokens.get("bos_token") or ""
  text = bos + _header(SYSTEM) + system.strip() + EOT_TEXT
  for m in messages:
    if m.content:  # upstream's get_prompt skips empty messages
      text += _header(m.role) + m.content.strip() + EOT_TEXT
  return text + _header(ASSISTANT)


def _as_message(m: Message | Mapping[str, str] | tuple[str, str]) -> Message:
  if isinstance(m, Message):
    return m
  role, content = (m["role"], m["content"]) if isinstance(m, Mapping) else m
  if role not in (USER, ASSISTANT):
    raise ValueError(f"chat message role {role!r}; expected {USER!r} or {ASSISTANT!r}")
  return Message(role, content)


def build_chat_prompt(tokenizer: Tokenizer, messages: Sequence[Message | Mapping[str, str] | tuple[str, str]], *,
                      system_prompt: str | None = None, keep_image_newline: bool = False) -> list[int]:
  """Prompt ids for a multi-turn chat ending with a user message; `<image>` marks where images go
  (IMAGE_PLACEHOLDER_ID in the result). `system_prompt=None` is upstream's default system prompt."""
  msgs = [_as_message(m) for m in messages]
  if not msgs or msgs[-1].role != USER:
    raise ValueError("a chat prompt must end with a user message")
  text = render_chat(tokenizer, msgs, system_prompt)
  if not keep_image_newline:
    return tokenizer_image_token(tokenizer, text)
  image_tokenizer, image_id = tokenizer.with_added_special_token(IMAGE_TEXT)
  return [IMAGE_PLACEHOLDER_ID if t == image_id else t for t in image_tokenizer.encode(text, add_special_tokens=False)]


def image_question(question: str, num_images: int) -> str:
  """The question with `" ".join(["<image>"] * n) + "\n"` in front when it holds no `<image>` of its
  own (upstream's wrapper); a question that holds some must hold one per image."""
  found = question.count(IMAGE_TEXT)
  if found == 0 and num_images > 0:
    return " ".join([IMAGE_TEXT] * num_images) + "\n" + question
  if found != num_images:
    raise ValueError(f"the question holds {found} <image> placeholder(s) but num_images is {num_images}")
  return question


def build_prompt(tokenizer: Tokenizer, question: str, num_images: int = 0, *, system_prompt: str | None = None,
                 think: str | None = None, keep_image_newline: bool = False) -> list[int]:
  """Prompt ids for one question about `num_images` images (or video placeholders).

  think: None, "think" or "no_think" (the stage-3 prompt tags).
  """
  question = image_question(question, num_images)
  if think is not None:
    if think not in THINK_TAGS:
      raise ValueError(f"think {think!r}; choices: {sorted(THINK_TAGS)} or None")
    question += THINK_TAGS[think]
  return build_chat_prompt(tokenizer, [Message(USER, question)], system_prompt=system_prompt,
                           keep_image_newline=keep_image_newline)


def build_scored_prompt(tokenizer: Tokenizer, question: str, answer: str, num_images: int = 0, *,
                        system_prompt: str | None = None) -> tuple[list[int], list[int]]:
  """(prompt ids, prompt-and-answer ids) as upstream's lmms-eval `loglikelihood` builds them: the chat
  without and with `answer` as the assistant turn, no think tag. The chat template appends the
  generation prompt after the answer too, so the ids after the prompt are the (trimmed) answer,
  `<|eot_id|>` and a new assistant header."""
  user = Message(USER, image_question(question, num_images))
  prompt = tokenizer_image_token(tokenizer, render_chat(tokenizer, [user], system_prompt))
  full = tokenizer_image_token(tokenizer, render_chat(tokenizer, [user, Message(ASSISTANT, answer)], system_prompt))
  return prompt, full

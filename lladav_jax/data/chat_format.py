"""Token ids and labels of a conversation, built by upstream LLaDA-V's rules (train/llava/train/train.py).

llava_llada (preprocess_llada), used from stage 2 on:
  * one system message, then each message rendered as
      <|startoftext|><|start_header_id|>{role}<|end_header_id|>\\n\\n{content}<|eot_id|>
    and encoded alone with `add_special_tokens=False`; every message but the system one loses its first
    token (that <|startoftext|>), so the sequence has one BOS;
  * user and system messages are not supervised (IGNORE_LABEL), assistant messages are, headers included;
  * then, anywhere, BOS, <|start_header_id|>, <|end_header_id|>, <|eot_id|> and the id the tokenizer gives
    the token string "\\n\\n" (none for a byte-level vocabulary) are supervised: their label is their id;
  * with an image or video, `<image>` is an added special token while encoding (so the text around it
    is encoded in separate pieces) and its id becomes IMAGE_PLACEHOLDER_ID.
plain (preprocess_plain, stage 1 with conv_llada_plain): `<image>` + caption + "\\n", encoded by
`tokenizer_image_token`; the image is not supervised, the caption and the "\\n" are. No BOS, no EOS.
"""

from typing import Sequence

import numpy as np

from lladav_jax.data.records import ASSISTANT, SYSTEM, Message
from lladav_jax.data.tokenizer import (BOS_TEXT, END_HEADER_TEXT, EOT_TEXT, IMAGE_TEXT, START_HEADER_TEXT,
                                       Tokenizer)
from lladav_jax.tokens import IGNORE_LABEL, IMAGE_PLACEHOLDER_ID

DEFAULT_SYSTEM_PROMPT = ("You are a helpful language and vision assistant. You are able to understand the visual "
                         "content that the user provides, and assist the user with a variety of tasks using "
                         "natural language.")
PLAIN_SEPARATOR = "\n"  # conv_llada_plain.sep

TEMPLATE_LLADA = "llava_llada"
TEMPLATE_PLAIN = "plain"
TEMPLATES = (TEMPLATE_LLADA, TEMPLATE_PLAIN)


def render_message(role: str, content: str) -> str:
  """One message in upstream's training chat template (no trimming, unlike the tokenizer's own)."""
  return f"{BOS_TEXT}{START_HEADER_TEXT}{role}{END_HEADER_TEXT}\n\n{content}{EOT_TEXT}"


def tokenizer_image_token(tokenizer: Tokenizer, prompt: str) -> list[int]:
  """Upstream's mm_utils.tokenizer_image_token: each piece between `<image>`s is encoded on its own
  (`tokenizer(piece)`, special tokens added); if the first piece starts with BOS, one BOS is kept and
  the first token of EVERY piece is dropped. So after an `<image>` the next token (usually "\\n") is
  lost when the prompt starts with <|startoftext|>, as it does at inference."""
  pieces = [tokenizer.encode(piece, add_special_tokens=True) for piece in prompt.split(IMAGE_TEXT)]
  ids: list[int] = []
  offset = 0
  if pieces and pieces[0] and pieces[0][0] == tokenizer.bos_id:
    offset = 1
    ids.append(pieces[0][0])
  for i, piece in enumerate(pieces):
    if i > 0:  # upstream's separator is [image] * (offset + 1), of which it also keeps [offset:]
      ids.append(IMAGE_PLACEHOLDER_ID)
    ids.extend(piece[offset:])
  return ids


class ChatEncoder:
  """Encodes messages with the training templates. Picklable (it is sent to data workers)."""

  def __init__(self, tokenizer: Tokenizer):
    self.tokenizer = tokenizer
    self.image_tokenizer, self.image_token_id = tokenizer.with_added_special_token(IMAGE_TEXT)
    # convert_tokens_to_ids of each string; a string with no entry (and no unk token) keeps nothing.
    kept = (BOS_TEXT, START_HEADER_TEXT, END_HEADER_TEXT, EOT_TEXT, "\n\n")
    self.structural_ids = frozenset(i for i in (tokenizer.token_to_id(t) for t in kept) if i is not None)
    self.start_header_id = tokenizer.token_to_id(START_HEADER_TEXT)
    self.eot_id = tokenizer.token_to_id(EOT_TEXT)

  def encode_llada(self, messages: Sequence[Message], *, has_visual: bool,
                   system_prompt: str = DEFAULT_SYSTEM_PROMPT) -> tuple[np.ndarray, np.ndarray]:
    """-> (token ids, labels), int64 [T] each, IMAGE_PLACEHOLDER_ID where `<image>` was."""
    tok = self.image_tokenizer if has_visual else self.tokenizer
    ids = tok.encode(render_message(SYSTEM, system_prompt), add_special_tokens=False)
    labels = [IGNORE_LABEL] * len(ids)
    for m in messages:
      encoded = tok.encode(render_message(m.role, m.content), add_special_tokens=False)[1:]
      ids += encoded
      labels += encoded if m.role == ASSISTANT else [IGNORE_LABEL] * len(encoded)
    ids_arr = np.asarray(ids, np.int64)
    labels_arr = np.asarray(labels, np.int64)
    structural = np.isin(ids_arr, list(self.structural_ids))
    labels_arr[structural] = ids_arr[structural]
    if has_visual:
      ids_arr[ids_arr == self.image_token_id] = IMAGE_PLACEHOLDER_ID
    return ids_arr, labels_arr

  def encode_plain(self, prompt: str, caption: str) -> tuple[np.ndarray, np.ndarray]:
    """`prompt` is upstream's replaced first message (`<image>`); -> (token ids, labels)."""
    ids = np.asarray(tokenizer_image_token(self.tokenizer, prompt + caption + PLAIN_SEPARATOR), np.int64)
    labels = ids.copy()
    labels[:len(tokenizer_image_token(self.tokenizer, prompt))] = IGNORE_LABEL
    return ids, labels

  def turn_ids(self, labels: np.ndarray) -> np.ndarray:
    """Upstream's generate_conversation_ids, from the (spliced, padded) labels: int32 [T].

    A message runs from a supervised <|start_header_id|> to the next <|eot_id|>; it is the assistant's
    when the token after the header is supervised (upstream compares it with the id of "assistant").
    The leading non-assistant message (system) and the first round are turn 0; each user message
    after an assistant message starts a new turn. Tokens outside messages (a cut-off last message,
    padding) take the turn before them.
    """
    labels = np.asarray(labels)
    n = labels.shape[0]
    turns = np.zeros(n, np.int64)
    starts = np.flatnonzero(labels == self.start_header_id)
    ends = np.flatnonzero(labels == self.eot_id)
    if len(starts) == 0 or len(ends) == 0:
      return turns.astype(np.int32)
    messages = []
    for start in starts:
      later = ends[ends >= start]
      if len(later):
        messages.append((int(start), int(later[0]), bool(start + 1 < n and labels[start + 1] != IGNORE_LABEL)))
    turn, previous_was_assistant = 0, False
    for start, end, is_assistant in messages:
      if not is_assistant and previous_was_assistant:
        turn += 1
      turns[start:end + 1] = turn
      previous_was_assistant = is_assistant
    # Turns never decrease, so upstream's "copy the previous id into zeros" is a running maximum.
    return np.maximum.accumulate(turns).astype(np.int32)


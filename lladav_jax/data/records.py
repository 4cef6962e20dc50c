"""LLaVA-format records: parsing, and the text rules upstream applies before tokenising.

A record is a JSON object:
  {"id": ..., "image": "a.jpg" | ["a.jpg", "b.jpg"] (optional), "video": "v.mp4" (optional),
   "conversations": [{"from": "human" | "gpt" | "system", "value": "..."}, ...]}
Messages may also be spelled {"role": "user" | "assistant" | "system", "content": "..."}.
Upstream's order (LazySupervisedDataset._get_item): `preprocess_multimodal` for records with an image
or video, then the template's own rules (preprocess_llada / preprocess_plain).
"""

import dataclasses
import json
import random
from typing import Any, Sequence

from lladav_jax.data import rejects
from lladav_jax.data.rejects import RecordRejected
from lladav_jax.data.tokenizer import IMAGE_TEXT

USER, ASSISTANT, SYSTEM = "user", "assistant", "system"
_ROLES = {"human": USER, "user": USER, "gpt": ASSISTANT, "assistant": ASSISTANT, "system": SYSTEM}
# Upstream removes this marker of a noisy video-instruction set from every message.
_NOISE_MARKER = "QA_GT_caption_based_noisy"

# Prompt tags of the stage-3 mix (upstream appends them to every human turn when it builds the mix file).
THINK_NONE = "none"
THINK_NO_THINK = "no_think"  # " /no_think" on every user turn (the non-reasoning part)
THINK_RANDOM = "think_random"  # " /think" on each user turn with probability 1/2 (the reasoning part)
THINK_MODES = (THINK_NONE, THINK_NO_THINK, THINK_RANDOM)


@dataclasses.dataclass(frozen=True)
class Message:
  role: str  # USER, ASSISTANT or SYSTEM
  content: str


@dataclasses.dataclass(frozen=True)
class Record:
  id: str
  messages: tuple[Message, ...]
  images: tuple[str, ...] = ()
  video: str | None = None

  @property
  def has_visual(self) -> bool:
    return bool(self.images) or self.video is not None

  @property
  def num_visuals(self) -> int:
    """Upstream reads the image list when a record has both keys, and one video is one visual."""
    return len(self.images) if self.images else (1 if self.video is not None else 0)


def parse_record(raw: bytes | str, default_id: str) -> Record:
  """One JSON object -> Record; RecordRejected (MALFORMED_JSON or BAD_RECORD) says what is wrong."""
  try:
    obj = json.loads(raw)
  except (json.JSONDecodeError, UnicodeDecodeError) as e:
    raise RecordRejected(rejects.MALFORMED_JSON, f"not valid JSON ({e})") from e
  if not isinstance(obj, dict):
    raise RecordRejected(rejects.MALFORMED_JSON, f"expected a JSON object, got {type(obj).__name__}")
  record_id = str(obj.get("id", default_id))
  try:
    return _record(obj, record_id)
  except RecordRejected as e:
    e.record_id = record_id
    raise


def _record(obj: dict, record_id: str) -> Record:
  conversations = obj.get("conversations")
  if not isinstance(conversations, list) or not conversations:
    raise RecordRejected(rejects.BAD_RECORD, f"record {record_id}: 'conversations' must be a non-empty list")
  messages = [_parse_message(m, record_id, i) for i, m in enumerate(conversations)]
  images = obj.get("image")
  if images is None:
    images = ()
  elif isinstance(images, str):
    images = (images,)
  elif isinstance(images, list) and all(isinstance(x, str) for x in images):
    images = tuple(images)
  else:
    raise RecordRejected(rejects.BAD_RECORD, f"record {record_id}: 'image' must be a path or a list of paths")
  video = obj.get("video")
  if video is not None and not isinstance(video, str):
    raise RecordRejected(rejects.BAD_RECORD, f"record {record_id}: 'video' must be a path")
  return Record(record_id, tuple(messages), images, None if images else video)


def _parse_message(m: Any, record_id: str, index: int) -> Message:
  if not isinstance(m, dict):
    raise RecordRejected(rejects.BAD_RECORD, f"record {record_id}: message {index} is not an object")
  # Upstream tries role/content first, then from/value.
  if "role" in m and "content" in m:
    role, content = m["role"], m["content"]
  elif "from" in m and "value" in m:
    role, content = m["from"], m["value"]
  else:
    raise RecordRejected(rejects.BAD_RECORD, f"record {record_id}: message {index} needs from/value or role/content")
  if not isinstance(role, str) or role.lower() not in _ROLES:
    raise RecordRejected(rejects.BAD_RECORD, f"record {record_id}: message {index} has unknown role {role!r}")
  if not isinstance(content, str):
    raise RecordRejected(rejects.BAD_RECORD, f"record {record_id}: message {index} content is not a string")
  return Message(_ROLES[role.lower()], content)


def add_think_tags(messages: Sequence[Message], mode: str, rng: random.Random) -> list[Message]:
  """Appends the stage-3 prompt tag to user turns, as upstream's create_mix_data.py does to the data."""
  if mode not in THINK_MODES:
    raise ValueError(f"think mode {mode!r}; choices: {THINK_MODES}")
  out = []
  for m in messages:
    if m.role == USER and mode == THINK_NO_THINK:
      m = Message(USER, m.content + " /no_think")
    elif m.role == USER and mode == THINK_RANDOM and rng.random() < 0.5:
      m = Message(USER, m.content + " /think")
    out.append(m)
  return out


def move_image_to_front(messages: Sequence[Message]) -> list[Message]:
  """Upstream's preprocess_multimodal (records with an image or video): a message with exactly one
  `<image>` not at its start gets it moved there, followed by a newline; the noise marker goes."""
  out = []
  for m in messages:
    text = m.content
    if text.count(IMAGE_TEXT) == 1 and not text.startswith(IMAGE_TEXT):
      text = (IMAGE_TEXT + "\n" + text.replace(IMAGE_TEXT, "").strip()).strip()
    out.append(Message(m.role, text.replace(_NOISE_MARKER, "")))
  return out


def llada_turns(record: Record, messages: Sequence[Message], *,
                skip_empty: bool = False) -> tuple[str | None, list[Message]]:
  """The messages preprocess_llada encodes, and the record's own system prompt if it starts with one.

  Upstream drops a first message that is not from the user. (Upstream fails on a leading system
  message; here it replaces the default system prompt.) A record without assistant text is kept, as
  upstream keeps it, unless `skip_empty`.
  """
  messages = list(messages)
  system = None
  if messages and messages[0].role == SYSTEM:
    system = messages.pop(0).content
  if messages and messages[0].role != USER:
    messages = messages[1:]
  count_placeholders(record, messages)
  if skip_empty and not any(m.role == ASSISTANT and m.content.strip() for m in messages):
    raise RecordRejected(rejects.NO_RESPONSE, f"record {record.id}: no assistant message with text")
  return system, messages


def plain_pair(record: Record, messages: Sequence[Message], *, skip_empty: bool = False) -> tuple[str, str]:
  """preprocess_plain: exactly two messages, the first holding `<image>` (its text is replaced by the
  image alone), the second the caption. Returns (prompt, caption). An empty caption is kept (the
  separator is then the only target), as upstream keeps it, unless `skip_empty`."""
  if len(messages) != 2:
    raise RecordRejected(rejects.BAD_RECORD, f"record {record.id}: the plain format needs 2 messages, "
                         f"got {len(messages)}")
  if IMAGE_TEXT not in messages[0].content:
    raise RecordRejected(rejects.BAD_RECORD, f"record {record.id}: the plain format needs <image> in the "
                         "first message")
  if skip_empty and not messages[1].content.strip():
    raise RecordRejected(rejects.NO_RESPONSE, f"record {record.id}: empty caption")
  prompt = IMAGE_TEXT
  count_placeholders(record, [Message(USER, prompt), messages[1]])
  return prompt, messages[1].content


def count_placeholders(record: Record, messages: Sequence[Message]) -> None:
  found = sum(m.content.count(IMAGE_TEXT) for m in messages)
  if found != record.num_visuals:
    what = f"video {record.video!r}" if record.video and not record.images else f"{len(record.images)} image(s)"
    raise RecordRejected(rejects.IMAGE_COUNT_MISMATCH,
                         f"record {record.id}: {found} <image> placeholder(s) in the text but {what}")

"""Why a record was skipped, and the log that lists every skipped (or truncated) record.

Bad input never stops a run: the record is skipped, counted under one of the reasons below and
written as one JSON line to the rejects log of the process that read it.
"""

import json
import os
from typing import Any

MALFORMED_JSON = "malformed_json"  # the line / array element is not a JSON object
BAD_RECORD = "bad_record"  # wrong keys or types, unknown role, not the plain format's two messages
IMAGE_COUNT_MISMATCH = "image_count_mismatch"  # <image> placeholders != images (or != 1 for a video)
NO_RESPONSE = "no_response"  # no assistant text or an empty caption (with empty_response="skip")
NO_TARGETS = "no_targets"  # not one supervised token: nothing to learn from
IMAGE_MISSING = "image_missing"
IMAGE_CORRUPT = "image_corrupt"
IMAGE_TOO_LARGE = "image_too_large"  # more pixels than allowed (decompression bomb)
VIDEO_UNREADABLE = "video_unreadable"
TOO_LONG = "too_long"  # over the maximum length when over-long samples are skipped
TOO_MANY_CROPS = "too_many_crops"  # more crops than the largest crop bucket
INVALID_SAMPLE = "invalid_sample"  # token ids outside the model's vocabulary
REASONS = (MALFORMED_JSON, BAD_RECORD, IMAGE_COUNT_MISMATCH, NO_RESPONSE, IMAGE_MISSING, IMAGE_CORRUPT,
           IMAGE_TOO_LARGE, VIDEO_UNREADABLE, TOO_LONG, TOO_MANY_CROPS, INVALID_SAMPLE, NO_TARGETS)


class RecordRejected(ValueError):
  """A record that cannot become a training sample; `reason` is one of REASONS."""

  def __init__(self, reason: str, detail: str, record_id: str | None = None):
    assert reason in REASONS, reason
    super().__init__(f"{reason}: {detail}")
    self.reason = reason
    self.detail = detail
    self.record_id = record_id  # when known before the record was fully read


class RejectLog:
  """Appends one JSON line per rejected (or truncated) record: reason, detail, source file, record
  index, id. Truncated records are kept in the data, as upstream keeps them; they are listed with
  reason "truncated".

  Lines are flushed as they are written, so a crash loses none; after a resume, records rejected
  between the checkpoint and the crash are read again and appear twice (same source and index).
  """

  def __init__(self, path: str | None):
    self.path = path
    self._file = None

  def write(self, entry: dict[str, Any]) -> None:
    if self.path is None:
      return
    if self._file is None:
      os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
      self._file = open(self.path, "a", encoding="utf-8")
    self._file.write(json.dumps(entry, ensure_ascii=False) + "\n")
    self._file.flush()

  def close(self) -> None:
    if self._file is not None:
      self._file.close()
      self._file = None


def reject_log_path(directory: str | None, process_index: int, process_count: int) -> str | None:
  if directory is None:
    return None
  return os.path.join(directory, f"rejects-process{process_index:05d}-of-{process_count:05d}.jsonl")

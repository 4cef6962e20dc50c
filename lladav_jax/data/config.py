"""Options of the data pipeline (a frozen dataclass; `data_config` reads it from a run config)."""

import dataclasses
import typing
from typing import Any, Mapping

from ml_collections import config_dict

from lladav_jax.data.chat_format import DEFAULT_SYSTEM_PROMPT, TEMPLATE_LLADA, TEMPLATES
from lladav_jax.data.media import VideoOptions
from lladav_jax.data.sources import SourceSpec

PADDING_UPSTREAM = "upstream"  # EOS (supervised) + zero-embedding padding to the longest, then masked
PADDING_MASKED = "masked"  # masked padding only: padding is never attended nor supervised
PADDING_MODES = (PADDING_UPSTREAM, PADDING_MASKED)
OVERLONG_TRUNCATE = "truncate"  # upstream: cut at the maximum length
OVERLONG_SKIP = "skip"
OVERLONG_MODES = (OVERLONG_TRUNCATE, OVERLONG_SKIP)
# A conversation with no assistant text, or an empty caption: upstream trains on it (the structural
# tokens, or the caption's "\n", are then its only targets).
EMPTY_RESPONSE_TRAIN = "train"
EMPTY_RESPONSE_SKIP = "skip"
EMPTY_RESPONSE_MODES = (EMPTY_RESPONSE_TRAIN, EMPTY_RESPONSE_SKIP)


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """What the pipeline reads and how it batches.

  Shapes: every batch is [batch_size, L] with L the smallest of `seq_len_buckets` that fits its longest
  row, and its crops [batch_size, C, S, S, 3] with C the smallest of `crop_buckets` that fits its row
  with the most crops; each (L, C) pair compiles once. `max_length` (the spliced sequence limit,
  upstream's model_max_length) defaults to the model config's, else the largest bucket.

  padding: PADDING_UPSTREAM reproduces upstream's collator for LLaDA within each group of
  `pad_group_size` rows (upstream's per_device_train_batch_size; None = the whole batch): EOS tokens
  (supervised, attended) to the group's longest text, zero embeddings (attended, not supervised) to its
  longest spliced row; then masked padding to the bucket. PADDING_MASKED pads with masked tokens only.
  packing: several samples per row as separate segments (needs PADDING_MASKED; for short stage-1 captions).
  empty_response: EMPTY_RESPONSE_TRAIN keeps records whose answer (or caption) is empty, as upstream;
  EMPTY_RESPONSE_SKIP rejects them (reason no_response).
  num_epochs: None repeats forever (each epoch shuffled anew). num_workers: decoding processes
  (0 decodes in the calling process); a resumed run must use the same number.
  """

  sources: tuple[SourceSpec, ...]
  template: str = TEMPLATE_LLADA
  system_prompt: str = DEFAULT_SYSTEM_PROMPT
  batch_size: int = 1
  seq_len_buckets: tuple[int, ...] | None = None  # None: powers of two from 1024 up to max_length
  crop_buckets: tuple[int, ...] = (10, 40)
  max_length: int | None = None
  padding: str = PADDING_UPSTREAM
  pad_group_size: int | None = None
  packing: bool = False
  overlong: str = OVERLONG_TRUNCATE
  empty_response: str = EMPTY_RESPONSE_TRAIN
  shuffle: bool = True
  seed: int = 0
  num_epochs: int | None = None
  drop_remainder: bool = True
  num_workers: int = 2
  worker_buffer_size: int = 4
  read_threads: int = 1
  prefetch_batches: int = 2
  max_image_pixels: int | None = None  # None: PIL's decompression-bomb limit
  video: VideoOptions = VideoOptions()
  index_dir: str | None = None
  rejects_dir: str | None = None
  # This many rejects in a row stop the run with an error (a wrong image folder would otherwise spin forever).
  max_consecutive_rejects: int = 10000
  # A larger fraction of rejected records stops the run with an error naming the main reason (checked from
  # REJECT_CHECK_RECORDS records read on, or one pass over the shard if that is shorter; and by `check_rejects`).
  max_rejected_fraction: float = 0.1

  def __post_init__(self):
    if not self.sources:
      raise ValueError("DataConfig needs at least one source")
    checks = [(self.template in TEMPLATES, f"template {self.template!r}; choices: {TEMPLATES}"),
              (self.padding in PADDING_MODES, f"padding {self.padding!r}; choices: {PADDING_MODES}"),
              (self.overlong in OVERLONG_MODES, f"overlong {self.overlong!r}; choices: {OVERLONG_MODES}"),
              (self.empty_response in EMPTY_RESPONSE_MODES,
               f"empty_response {self.empty_response!r}; choices: {EMPTY_RESPONSE_MODES}"),
              (self.batch_size >= 1, f"batch_size {self.batch_size} < 1"),
              (self.num_workers >= 0, f"num_workers {self.num_workers} < 0"),
              (self.pad_group_size is None or self.pad_group_size >= 1, f"pad_group_size {self.pad_group_size} < 1"),
              (not (self.packing and self.padding == PADDING_UPSTREAM),
               "packed rows use masked padding: set padding='masked' with packing"),
              (all(b >= 0 for b in self.crop_buckets) and list(self.crop_buckets) == sorted(self.crop_buckets)
               and self.crop_buckets, f"crop_buckets {self.crop_buckets} must be ascending and >= 0"),
              (self.num_epochs is None or self.num_epochs >= 1, f"num_epochs {self.num_epochs} < 1"),
              (0 <= self.max_rejected_fraction <= 1, f"max_rejected_fraction {self.max_rejected_fraction} is not "
               "in [0, 1]"),
              (self.max_consecutive_rejects >= 1, f"max_consecutive_rejects {self.max_consecutive_rejects} < 1")]
    if self.seq_len_buckets is not None:
      checks.append((list(self.seq_len_buckets) == sorted(self.seq_len_buckets) and self.seq_len_buckets
                     and self.seq_len_buckets[0] >= 1, f"seq_len_buckets {self.seq_len_buckets} must be ascending"))
    for ok, message in checks:
      if not ok:
        raise ValueError(f"DataConfig: {message}")

  def resolved_max_length(self, model_max_length: int | None) -> int:
    length = self.max_length or model_max_length or (self.seq_len_buckets[-1] if self.seq_len_buckets else None)
    if length is None:
      raise ValueError("DataConfig: no max_length, in the data or the model config, and no seq_len_buckets")
    return int(length)

  def resolved_seq_buckets(self, max_length: int) -> tuple[int, ...]:
    """The buckets; the largest must hold a sample of max_length (and every row is at most that)."""
    if self.seq_len_buckets is None:
      buckets, b = [], 1024
      while b < max_length:
        buckets.append(b)
        b *= 2
      return tuple(buckets) + (max_length,)
    if self.seq_len_buckets[-1] < max_length:
      raise ValueError(f"DataConfig: the largest sequence bucket {self.seq_len_buckets[-1]} is shorter than the "
                       f"maximum sample length {max_length}")
    return tuple(self.seq_len_buckets)


def _section_entry(field: dataclasses.Field) -> Any:
  """A field's default; None becomes a placeholder of the field's type, so that an override can set it."""
  if field.default is not None:
    return field.default
  kind = next(t for t in typing.get_args(field.type) if t is not type(None))
  return config_dict.placeholder(typing.get_origin(kind) or kind)


def data_section() -> dict[str, Any]:
  """DataConfig's fields and defaults as a run-config section (`sources` empty: a recipe sets them;
  dicts of SourceSpec fields)."""
  fields = {f.name: _section_entry(f) for f in dataclasses.fields(DataConfig) if f.name != "sources"}
  return dict(fields, video=dataclasses.asdict(fields["video"]), sources=[])


def data_config(config: Mapping[str, Any]) -> DataConfig:
  """A run config's `data` section (ConfigDict or dict; sources as a list of dicts) -> DataConfig."""
  d = dict(config.to_dict() if hasattr(config, "to_dict") else config)
  d["sources"] = tuple(SourceSpec(**dict(s)) for s in d.get("sources", ()))
  d["video"] = VideoOptions(**dict(d.get("video") or {}))
  for key in ("seq_len_buckets", "crop_buckets"):
    if d.get(key) is not None:
      d[key] = tuple(d[key])
  return DataConfig(**d)

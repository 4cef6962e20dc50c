"""One raw record -> one model-ready example (runs in the data worker processes).

Steps, in upstream's order: parse, stage-3 tags, preprocess_multimodal, template (ids + labels), the
collator's cut at the maximum length (before images are spliced; images whose `<image>` was cut are not
loaded), images / video -> crops, `build_sample` (placeholders expanded, cut again after splicing),
turn ids from the spliced labels. Anything wrong with the input becomes a reject, never an exception.

An example is a flat dict of NumPy arrays (they travel to the main process in shared memory):
  input_ids, image_mask, image_index, image_weight, turn_ids, labels: [T] / [T, 4] (Sample fields)
  crops: float32 [C, S, S, 3]; pre_length: text length before splicing (for upstream padding);
  truncated: "" or what was cut; source, index, id: where the record came from.
A reject is {"reject": reason, "detail": ..., "source", "index", "id"}.
"""

import random
from typing import Sequence

import numpy as np

from lladav_jax.data import media, records, rejects
from lladav_jax.data.chat_format import TEMPLATE_LLADA, ChatEncoder
from lladav_jax.data.config import EMPTY_RESPONSE_SKIP, OVERLONG_TRUNCATE, DataConfig
from lladav_jax.data.rejects import RecordRejected
from lladav_jax.data.sources import SourceSpec
from lladav_jax.images.crops import Visual, image_visual, video_visual
from lladav_jax.images.feature_layout import visual_layout
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.samples import Sample, SampleError, build_sample
from lladav_jax.tokens import IGNORE_LABEL, IMAGE_PLACEHOLDER_ID

SAMPLE_KEYS = ("input_ids", "image_mask", "image_index", "image_weight", "turn_ids", "labels")


def sample_from_example(example: dict) -> Sample:
  return Sample(**{k: example[k] for k in SAMPLE_KEYS}, crops=example["crops"])


class ExampleBuilder:
  """Callable on RecordSource elements; picklable, so grain can send it to worker processes."""

  def __init__(self, specs: Sequence[SourceSpec], encoder: ChatEncoder, model_config: LLaDAVConfig,
               data_config: DataConfig, max_length: int):
    self.specs = list(specs)
    self.encoder = encoder
    self.model_config = model_config
    self.data_config = data_config
    self.max_length = max_length
    self.max_crops = data_config.crop_buckets[-1]

  def __call__(self, element: dict) -> dict:
    source, index = int(element["source"]), int(element["index"])
    where = {"source": source, "index": index, "id": f"{self.specs[source].path}:{index}"}
    try:
      record = records.parse_record(element["data"], default_id=where["id"])
      where["id"] = record.id
      return dict(self._build(record, self.specs[source], source, index), **where)
    except RecordRejected as e:
      where["id"] = e.record_id or where["id"]
      return dict(reject=e.reason, detail=e.detail, **where)

  def _build(self, record: records.Record, spec: SourceSpec, source: int, index: int) -> dict:
    cfg = self.data_config
    rng = random.Random(f"{cfg.seed}:{source}:{index}")  # str seeds are hashed with sha512: stable everywhere
    messages = records.add_think_tags(record.messages, spec.think, rng)
    if record.has_visual:
      messages = records.move_image_to_front(messages)
    skip_empty = cfg.empty_response == EMPTY_RESPONSE_SKIP
    if cfg.template == TEMPLATE_LLADA:
      system, turns = records.llada_turns(record, messages, skip_empty=skip_empty)
      ids, labels = self.encoder.encode_llada(turns, has_visual=record.has_visual,
                                              system_prompt=cfg.system_prompt if system is None else system)
    else:
      prompt, caption = records.plain_pair(record, messages, skip_empty=skip_empty)
      ids, labels = self.encoder.encode_plain(prompt, caption)

    truncate = cfg.overlong == OVERLONG_TRUNCATE
    text_length = len(ids)
    text_cut = truncate and text_length > self.max_length
    if text_cut:  # upstream's collator cuts the text before splicing
      ids, labels = ids[:self.max_length], labels[:self.max_length]
    visuals = self._visuals(record, spec, int(np.sum(ids == IMAGE_PLACEHOLDER_ID)))
    full_length = len(ids) - len(visuals) + sum(visual_layout(v, self.model_config).num_tokens for v in visuals)
    if full_length > self.max_length and not truncate:
      raise RecordRejected(rejects.TOO_LONG, f"record {record.id}: {full_length} tokens after splicing "
                           f"{len(visuals)} visual(s) exceed the maximum length {self.max_length}")
    try:
      sample = build_sample(ids, visuals, self.model_config, labels=labels, max_length=self.max_length,
                            truncate=truncate, sample_id=f"record {record.id}")
    except SampleError as e:
      raise RecordRejected(rejects.INVALID_SAMPLE, str(e)) from e
    if not np.any(sample.labels != IGNORE_LABEL):  # a vocabulary without the structural tokens
      raise RecordRejected(rejects.NO_TARGETS, f"record {record.id}: no supervised token")
    if sample.num_crops > self.max_crops:
      raise RecordRejected(rejects.TOO_MANY_CROPS, f"record {record.id}: {sample.num_crops} crops, more than the "
                           f"largest crop bucket {self.max_crops}")
    out = {k: getattr(sample, k) for k in SAMPLE_KEYS}
    out["turn_ids"] = self.encoder.turn_ids(sample.labels)
    out["crops"] = sample.crops
    out["pre_length"] = np.int64(len(ids))
    out["truncated"] = ""  # or what was cut, for the rejects log
    if text_cut:
      out["truncated"] = f"the text of {text_length} tokens was cut to {self.max_length} before splicing images"
    elif full_length > self.max_length:
      out["truncated"] = f"{full_length} tokens after splicing {len(visuals)} visual(s) were cut to {self.max_length}"
    return out

  def _visuals(self, record: records.Record, spec: SourceSpec, keep: int) -> list[Visual]:
    """Crops of the first `keep` visuals (the ones whose placeholder survived the cut)."""
    if keep == 0:
      return []
    cfg, max_pixels = self.model_config, self.data_config.max_image_pixels
    if record.images:
      images = media.load_images(record.images[:keep], spec, max_pixels)
      multi = len(record.images) > 1  # upstream pads every image of a multi-image record to a square
      return [image_visual(image, cfg, multi_image=multi) for image in images]
    frames = media.load_video_frames(record.video, spec, self.data_config.video, max_pixels)
    return [video_visual(frames, cfg)]

"""From records to batches of few distinct shapes, on the host, before any image is decoded.

Each record's prompt is tokenised (upstream's inference template) and its images' sizes (a video's
frame count) are read from their headers, which fixes its spliced length and crop count exactly
(`probe`). Records are
then sorted by (crop bucket, length bucket) and cut into batches; a batch's shape is its largest
bucket pair, so only the few distinct pairs compile. Every process computes the same batches from the
same records, so processes agree on each batch's shape without talking to each other.
"""

import dataclasses
import io
import os
from typing import Sequence

import numpy as np
from PIL import Image

from lladav_jax.data.prompts import build_prompt
from lladav_jax.data.tokenizer import IMAGE_TEXT, Tokenizer
from lladav_jax.eval.tasks.base import Record
from lladav_jax.images import video
from lladav_jax.images.crops import (KIND_ANYRES, KIND_PLAIN, KIND_VIDEO, Visual, select_best_resolution,
                                     video_placeholder_visuals)
from lladav_jax.images.loading import ImageTooLargeError
from lladav_jax.images.feature_layout import visual_layout
from lladav_jax.model_config import LLaDAVConfig


@dataclasses.dataclass(frozen=True)
class Prompt:
  """A record ready to batch: prompt ids (IMAGE_PLACEHOLDER_ID per image) and its spliced shape."""

  record: Record
  ids: tuple[int, ...]
  length: int  # tokens after each placeholder is expanded into its image tokens
  crops: int
  frames: tuple[int, ...] = ()  # the video frames to decode


@dataclasses.dataclass(frozen=True)
class Batch:
  prompts: tuple[Prompt, ...]  # real rows only; the runner pads to the batch size
  seq_len: int
  max_crops: int


def question_ids(tokenizer: Tokenizer, question: str, num_images: int, think: str | None,
                 system_prompt: str | None = None) -> list[int]:
  """Upstream's evaluation prompt: placeholders in front, and the think tag, only when the question
  has images and no `<image>` of its own (lmms-eval's llava_onevision_llada)."""
  if num_images and IMAGE_TEXT not in question:
    return build_prompt(tokenizer, question, num_images, think=think, system_prompt=system_prompt)
  return build_prompt(tokenizer, question, num_images, system_prompt=system_prompt)


def image_size(source) -> tuple[int, int]:
  """(width, height) from the header only; ImageTooLargeError for a decompression bomb, which
  PIL refuses already while reading the header."""
  if isinstance(source, Image.Image):
    return source.size
  try:
    with (io.BytesIO(source) if isinstance(source, bytes) else open(os.fspath(source), "rb")) as f:
      return Image.open(f).size
  except Image.DecompressionBombError as e:
    raise ImageTooLargeError(f"image {'<bytes>' if isinstance(source, bytes) else source} is too large to "
                             f"decode: {e}") from e


def visual_shape(size: tuple[int, int], config: LLaDAVConfig, multi_image: bool) -> tuple[int, int]:
  """(crops, image tokens) of one image, as `crops.inference_visuals` + `visual_layout` make them."""
  if config.is_anyres and not multi_image:
    best_w, best_h = select_best_resolution(size, config.image_grid_pinpoints)
    side = config.vision.image_size
    grid = (best_w // side, best_h // side)
    crops = 1 + grid[0] * grid[1]
    shape_only = Visual(KIND_ANYRES, np.zeros((crops, 0, 0, 3), np.float32), size, grid)
  else:
    crops = 1
    shape_only = Visual(KIND_PLAIN, np.zeros((1, 0, 0, 3), np.float32), size)
  return crops, visual_layout(shape_only, config).num_tokens


def video_shape(num_frames: int, config: LLaDAVConfig, settings: video.VideoSettings) -> tuple[int, int, int]:
  """(placeholders, crops, image tokens) of a video of `num_frames` sampled frames, as
  `crops.video_visual` + `video_placeholder_visuals` + `visual_layout` make them."""
  shape_only = Visual(KIND_VIDEO, np.zeros((num_frames, 0, 0, 3), np.float32), (0, 0), pool_mode=settings.pool_mode)
  pieces = video_placeholder_visuals(shape_only, settings.token_strategy)
  return len(pieces), sum(p.num_crops for p in pieces), sum(visual_layout(p, config).num_tokens for p in pieces)


def probe(record: Record, tokenizer: Tokenizer, config: LLaDAVConfig, think: str | None,
          system_prompt: str | None = None, video_settings: video.VideoSettings = video.VideoSettings()) -> Prompt:
  """Raises OSError/ValueError (unreadable image or video header, bad placeholders) for the caller
  to report."""
  if record.video is not None:
    if record.images:
      raise ValueError(f"record {record.id} has both images and a video")
    frames = video.sample_frames(video.frame_count(record.video), video_settings)
    placeholders, crops, tokens = video_shape(len(frames), config, video_settings)
    ids = question_ids(tokenizer, record.question, placeholders, think, system_prompt)
    return Prompt(record, tuple(ids), len(ids) - placeholders + tokens, crops, tuple(int(f) for f in frames))
  ids = question_ids(tokenizer, record.question, len(record.images), think, system_prompt)
  length, crops = len(ids) - len(record.images), 0
  multi = len(record.images) > 1
  for source in record.images:
    c, tokens = visual_shape(image_size(source), config, multi)
    crops += c
    length += tokens
  return Prompt(record, tuple(ids), length, crops)


def ladder(value: int, minimum: int = 1) -> int:
  """The smallest bucket >= value among 1, 2, 3 and m * 2^k (m = 4..7): at most 25% padding."""
  value = max(int(value), minimum)
  if value <= 4:
    return value
  k = max(0, value.bit_length() - 3)
  while True:
    for m in (4, 5, 6, 7, 8):
      if m << k >= value:
        return m << k
    k += 1


def bucket_batches(prompts: Sequence[Prompt], batch_size: int, min_length_bucket: int = 64) -> list[Batch]:
  """Batches of `batch_size` prompts sorted by (crop bucket, length bucket, index)."""
  def key(p):
    return ladder(p.crops), ladder(p.length, min_length_bucket), p.record.index
  ordered = sorted(prompts, key=key)
  batches = []
  for lo in range(0, len(ordered), batch_size):
    chunk = tuple(ordered[lo:lo + batch_size])
    batches.append(Batch(chunk, max(ladder(p.length, min_length_bucket) for p in chunk),
                         max(ladder(p.crops) for p in chunk)))
  return batches

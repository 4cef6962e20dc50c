"""Host-side assembly of the model's inputs: image placeholders expanded, samples batched (NumPy).

A sample is token ids with `IMAGE_PLACEHOLDER_ID` where each image or video goes. `build_sample`
expands every placeholder into that visual's feature tokens (its `FeatureLayout`) and checks the
sample; `collate` pads samples (or packs several per row) into fixed shapes for jit:

  input_ids     int32 [B, L]      token ids (0 at image and padding positions)
  positions     int32 [B, L]      RoPE positions, restarting at every packed segment
  segment_ids   int32 [B, L]      1.. per packed sample, 0 = padding
  turn_ids      int32 [B, L]      dialogue turn of each token (for the "dialogue causal" mask)
  image_mask    bool  [B, L]      True where the embedding comes from image features
  image_index   int32 [B, L, 4]   into the row's feature table: crop * T + token, or the newline slot
  image_weight  float32 [B, L, 4] weights of the four taps (0 for text)
  pixel_values  float32 [B, C, S, S, 3]  crops of the row, zero-padded to C crops
  crop_mask     bool  [B, C]      which crops are real
  labels        int32 [B, L]      only when labels were given (IGNORE_LABEL at image tokens)
"""

import dataclasses
from typing import Sequence

import jax
import numpy as np

from lladav_jax.images.crops import Visual
from lladav_jax.images.feature_layout import NEWLINE, TAPS, visual_layout
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.tokens import IGNORE_LABEL, IMAGE_PLACEHOLDER_ID


# The collated arrays `LLaDAV.__call__` reads (the sampler's prompt inputs are the same arrays).
MODEL_INPUT_KEYS = ("input_ids", "positions", "segment_ids", "image_mask", "image_index", "image_weight",
                    "pixel_values")


class SampleError(ValueError):
  """A sample that cannot be turned into model inputs; the message names the sample."""


@dataclasses.dataclass(frozen=True)
class Sample:
  """One sample with image placeholders expanded; index is local to the sample's own crops."""

  input_ids: np.ndarray  # int32 [T]
  image_mask: np.ndarray  # bool [T]
  image_index: np.ndarray  # int32 [T, TAPS], NEWLINE for the newline vector
  image_weight: np.ndarray  # float32 [T, TAPS]
  turn_ids: np.ndarray  # int32 [T]
  crops: np.ndarray  # float32 [C, S, S, 3]
  labels: np.ndarray | None  # int32 [T]

  @property
  def length(self) -> int:
    return int(self.input_ids.shape[0])

  @property
  def num_crops(self) -> int:
    return int(self.crops.shape[0])


def build_sample(token_ids: Sequence[int], visuals: Sequence[Visual], config: LLaDAVConfig, *,
                 labels: Sequence[int] | None = None, turn_ids: Sequence[int] | None = None,
                 max_length: int | None = None, truncate: bool = False,
                 sample_id: str = "<sample>") -> Sample:
  """Expands each placeholder in `token_ids` into the tokens of the next visual.

  Image tokens get label IGNORE_LABEL and inherit the turn of their placeholder. Over `max_length`
  (default: the config's), the sample is an error, or is cut there when `truncate` (upstream).
  """
  ids = np.asarray(token_ids, dtype=np.int64)
  if ids.ndim != 1:
    raise SampleError(f"{sample_id}: token ids must be 1-D, got shape {ids.shape}")
  n = ids.shape[0]
  lab = None if labels is None else np.asarray(labels, dtype=np.int64)
  turns = np.zeros(n, np.int64) if turn_ids is None else np.asarray(turn_ids, dtype=np.int64)
  for name, arr in (("labels", lab), ("turn_ids", turns)):
    if arr is not None and arr.shape != ids.shape:
      raise SampleError(f"{sample_id}: {name} has shape {arr.shape}, token ids {ids.shape}")
  placeholders = np.flatnonzero(ids == IMAGE_PLACEHOLDER_ID)
  if len(placeholders) != len(visuals):
    raise SampleError(f"{sample_id}: {len(placeholders)} image placeholders in the text but "
                      f"{len(visuals)} images/videos were given")
  bad = (ids < 0) & (ids != IMAGE_PLACEHOLDER_ID) | (ids >= config.text.vocab_size)
  if bad.any():
    raise SampleError(f"{sample_id}: token id {int(ids[bad][0])} at position {int(np.flatnonzero(bad)[0])} "
                      f"is outside the vocabulary [0, {config.text.vocab_size})")

  tokens_per_crop = config.vision.num_patches
  pieces_ids, pieces_mask, pieces_index, pieces_weight, pieces_turn, pieces_lab = [], [], [], [], [], []
  crops, crop_offset, start = [], 0, 0

  def add_text(lo: int, hi: int):
    count = hi - lo
    pieces_ids.append(ids[lo:hi])
    pieces_mask.append(np.zeros(count, bool))
    pieces_index.append(np.zeros((count, TAPS), np.int64))
    pieces_weight.append(np.zeros((count, TAPS), np.float32))
    pieces_turn.append(turns[lo:hi])
    if lab is not None:
      pieces_lab.append(lab[lo:hi])

  for visual, pos in zip(visuals, placeholders):
    add_text(start, pos)
    layout = visual_layout(visual, config)
    count = layout.num_tokens
    index = np.where(layout.index == NEWLINE, NEWLINE, layout.index.astype(np.int64) + crop_offset * tokens_per_crop)
    pieces_ids.append(np.zeros(count, np.int64))
    pieces_mask.append(np.ones(count, bool))
    pieces_index.append(index)
    pieces_weight.append(layout.weight)
    pieces_turn.append(np.full(count, turns[pos]))
    if lab is not None:
      pieces_lab.append(np.full(count, IGNORE_LABEL))
    crops.append(visual.crops)
    crop_offset += visual.num_crops
    start = pos + 1
  add_text(start, n)

  out_ids = np.concatenate(pieces_ids)
  limit = config.max_length if max_length is None else max_length
  keep = out_ids.shape[0]
  if limit is not None and keep > limit:
    if not truncate:
      raise SampleError(f"{sample_id}: {keep} tokens after expanding {len(visuals)} image(s) exceed the "
                        f"maximum length {limit}")
    keep = limit
  size = config.vision.image_size
  return Sample(
      input_ids=out_ids[:keep].astype(np.int32),
      image_mask=np.concatenate(pieces_mask)[:keep],
      image_index=np.concatenate(pieces_index)[:keep].astype(np.int32),
      image_weight=np.concatenate(pieces_weight)[:keep],
      turn_ids=np.concatenate(pieces_turn)[:keep].astype(np.int32),
      crops=(np.concatenate(crops) if crops else np.zeros((0, size, size, 3), np.float32)),
      labels=None if lab is None else np.concatenate(pieces_lab)[:keep].astype(np.int32),
  )


def collate(rows: Sequence[Sequence[Sample]], seq_len: int, max_crops: int,
            config: LLaDAVConfig) -> dict[str, np.ndarray]:
  """Fixed-shape batch from rows of samples; several samples in a row are packed as segments."""
  batch = len(rows)
  size = config.vision.image_size
  tokens_per_crop = config.vision.num_patches
  newline_slot = max_crops * tokens_per_crop  # the newline vector follows the row's crops
  with_labels = any(s.labels is not None for row in rows for s in row)
  out = dict(
      input_ids=np.zeros((batch, seq_len), np.int32),
      positions=np.zeros((batch, seq_len), np.int32),
      segment_ids=np.zeros((batch, seq_len), np.int32),
      turn_ids=np.zeros((batch, seq_len), np.int32),
      image_mask=np.zeros((batch, seq_len), bool),
      image_index=np.zeros((batch, seq_len, TAPS), np.int32),
      image_weight=np.zeros((batch, seq_len, TAPS), np.float32),
      pixel_values=np.zeros((batch, max_crops, size, size, 3), np.float32),
      crop_mask=np.zeros((batch, max_crops), bool),
  )
  if with_labels:
    out["labels"] = np.full((batch, seq_len), IGNORE_LABEL, np.int32)
  for b, row in enumerate(rows):
    length = sum(s.length for s in row)
    crops = sum(s.num_crops for s in row)
    if length > seq_len:
      raise SampleError(f"batch row {b}: {length} tokens do not fit the sequence length {seq_len}")
    if crops > max_crops:
      raise SampleError(f"batch row {b}: {crops} image crops do not fit the crop budget {max_crops}")
    t, c = 0, 0
    for segment, sample in enumerate(row, start=1):
      sl = slice(t, t + sample.length)
      out["input_ids"][b, sl] = sample.input_ids
      out["positions"][b, sl] = np.arange(sample.length)
      out["segment_ids"][b, sl] = segment
      out["turn_ids"][b, sl] = sample.turn_ids
      out["image_mask"][b, sl] = sample.image_mask
      index = np.where(sample.image_index == NEWLINE, newline_slot, sample.image_index + c * tokens_per_crop)
      out["image_index"][b, sl] = np.where(sample.image_mask[:, None], index, 0)
      out["image_weight"][b, sl] = sample.image_weight
      out["pixel_values"][b, c:c + sample.num_crops] = sample.crops
      out["crop_mask"][b, c:c + sample.num_crops] = True
      if with_labels and sample.labels is not None:
        out["labels"][b, sl] = sample.labels
      t += sample.length
      c += sample.num_crops
  return out


def model_inputs(batch: dict, *, dialogue_causal: bool = False) -> dict:
  """The keyword arguments of `LLaDAV.__call__` taken from a collated batch."""
  inputs = {k: batch[k] for k in MODEL_INPUT_KEYS if k in batch}
  if dialogue_causal:
    inputs["turn_ids"] = batch["turn_ids"]
  return inputs


def abstract_inputs(config: LLaDAVConfig, batch: int, seq_len: int, max_crops: int) -> dict:
  """Shapes of the model inputs of a collated batch, for `jax.eval_shape(model.init, ...)` without data."""
  size = config.vision.image_size
  spec = jax.ShapeDtypeStruct
  return dict(
      input_ids=spec((batch, seq_len), np.int32),
      positions=spec((batch, seq_len), np.int32),
      segment_ids=spec((batch, seq_len), np.int32),
      image_mask=spec((batch, seq_len), np.bool_),
      image_index=spec((batch, seq_len, TAPS), np.int32),
      image_weight=spec((batch, seq_len, TAPS), np.float32),
      pixel_values=spec((batch, max_crops, size, size, 3), np.float32),
  )

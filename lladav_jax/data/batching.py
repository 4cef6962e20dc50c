"""Examples -> fixed-shape batches: upstream's padding, shape buckets, and sequence packing.

Upstream's collator for LLaDA (DataCollatorForSupervisedDataset with is_llada) pads `input_ids` AND
`labels` with the pad token (<|endoftext|>) to the longest text of the batch and passes no attention
mask; after splicing images the model pads again, with zero embeddings and label IGNORE, to the longest
spliced sequence, and cuts every row at the maximum length. Everything stays attended, and the EOS
padding is supervised (it counts in the loss and in each sample's normaliser: the model learns to end
answers with EOS). `upstream_padding` rebuilds exactly those rows inside segment 1 (EOS tokens with
label EOS; zero embeddings as image tokens with all weights 0), after which `collate` pads every row
to the bucket with masked padding (segment 0), which the model never sees.
"""

from typing import Sequence

import numpy as np

from lladav_jax.data.examples import sample_from_example
from lladav_jax.images.feature_layout import NEWLINE, TAPS
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.samples import Sample, collate
from lladav_jax.tokens import IGNORE_LABEL


def bucket(value: int, buckets: Sequence[int], what: str) -> int:
  """The smallest bucket >= value."""
  for b in buckets:
    if b >= value:
      return int(b)
  raise ValueError(f"{what} {value} exceeds the largest bucket {buckets[-1]}")


def _extend(sample: Sample, eos: int, zeros: int, pad_id: int) -> Sample:
  """Appends `eos` supervised pad tokens, then `zeros` zero-embedding tokens, to one sample."""
  last_turn = sample.turn_ids[-1] if sample.length else 0
  n = eos + zeros
  return Sample(
      input_ids=np.concatenate([sample.input_ids, np.full(eos, pad_id, np.int32), np.zeros(zeros, np.int32)]),
      image_mask=np.concatenate([sample.image_mask, np.zeros(eos, bool), np.ones(zeros, bool)]),
      # Zero embeddings: image tokens whose taps all have weight 0 (pointed at the newline slot, always valid).
      image_index=np.concatenate([sample.image_index, np.zeros((eos, TAPS), np.int32),
                                  np.full((zeros, TAPS), NEWLINE, np.int32)]),
      image_weight=np.concatenate([sample.image_weight, np.zeros((n, TAPS), np.float32)]),
      turn_ids=np.concatenate([sample.turn_ids, np.full(n, last_turn, np.int32)]),
      crops=sample.crops,
      labels=np.concatenate([sample.labels, np.full(eos, pad_id, np.int32), np.full(zeros, IGNORE_LABEL, np.int32)]),
  )


def upstream_padding(examples: Sequence[dict], pad_id: int, max_length: int) -> list[Sample]:
  """One upstream collator batch: EOS padding to the longest text (counted before splicing, cut at
  `max_length` after it, as upstream cuts), then zero embeddings to the longest spliced row."""
  samples = [sample_from_example(e) for e in examples]
  longest_text = max(int(e["pre_length"]) for e in examples)
  eos = [max(0, min(longest_text - int(e["pre_length"]), max_length - s.length)) for e, s in zip(examples, samples)]
  longest = max(s.length + n for s, n in zip(samples, eos))
  return [_extend(s, n, longest - s.length - n, pad_id) for s, n in zip(samples, eos)]


def batch_shapes(rows: Sequence[Sequence[Sample]], seq_buckets: Sequence[int],
                 crop_buckets: Sequence[int]) -> tuple[int, int]:
  length = max((sum(s.length for s in row) for row in rows), default=0)
  crops = max((sum(s.num_crops for s in row) for row in rows), default=0)
  return bucket(length, seq_buckets, "row length"), bucket(crops, crop_buckets, "row crop count")


def make_batch(rows: Sequence[Sequence[Sample]], batch_size: int, seq_buckets: Sequence[int],
               crop_buckets: Sequence[int], config: LLaDAVConfig) -> dict[str, np.ndarray]:
  """collate's dict (labels included) for `rows`, with empty rows added up to `batch_size`."""
  rows = list(rows) + [[] for _ in range(batch_size - len(rows))]
  seq_len, max_crops = batch_shapes(rows, seq_buckets, crop_buckets)
  batch = collate(rows, seq_len=seq_len, max_crops=max_crops, config=config)
  if "labels" not in batch:  # only when every row is empty
    batch["labels"] = np.full(batch["input_ids"].shape, IGNORE_LABEL, np.int32)
  return batch


class RowPacker:
  """First-fit packing of examples into `batch_size` rows of at most `seq_len` tokens and `max_crops`
  crops; each example is its own segment (the attention mask keeps segments apart)."""

  def __init__(self, batch_size: int, seq_len: int, max_crops: int):
    self.batch_size, self.seq_len, self.max_crops = batch_size, seq_len, max_crops
    self.rows: list[list[Sample]] = []
    self._room: list[list[int]] = []

  def add(self, sample: Sample) -> bool:
    """Places the sample in the first row with room (opening rows as needed); False if none has."""
    if sample.length > self.seq_len or sample.num_crops > self.max_crops:
      raise ValueError(f"a sample of {sample.length} tokens / {sample.num_crops} crops cannot fit a row of "
                       f"{self.seq_len} / {self.max_crops}")
    for row, room in zip(self.rows, self._room):
      if sample.length <= room[0] and sample.num_crops <= room[1]:
        row.append(sample)
        room[0] -= sample.length
        room[1] -= sample.num_crops
        return True
    if len(self.rows) < self.batch_size:
      self.rows.append([sample])
      self._room.append([self.seq_len - sample.length, self.max_crops - sample.num_crops])
      return True
    return False


def pad_batch_to(batch: dict[str, np.ndarray], seq_len: int, max_crops: int,
                 config: LLaDAVConfig) -> dict[str, np.ndarray]:
  """Pads a collated batch to a larger (seq_len, max_crops), e.g. so that all processes agree on one
  bucket. The newline slot moves to the new end of the crop table, so its indices are rewritten."""
  b, length = batch["input_ids"].shape
  crops = batch["pixel_values"].shape[1]
  if seq_len < length or max_crops < crops:
    raise ValueError(f"cannot pad a batch of length {length} / {crops} crops down to {seq_len} / {max_crops}")
  tokens_per_crop = config.vision.num_patches
  out = {}
  for key, value in batch.items():
    if key == "pixel_values" or key == "crop_mask":
      widths = [(0, 0), (0, max_crops - crops)] + [(0, 0)] * (value.ndim - 2)
    else:
      widths = [(0, 0), (0, seq_len - length)] + [(0, 0)] * (value.ndim - 2)
    fill = IGNORE_LABEL if key == "labels" else 0
    out[key] = np.pad(value, widths, constant_values=fill)
  old_slot, new_slot = crops * tokens_per_crop, max_crops * tokens_per_crop
  newline = out["image_mask"][..., None] & (out["image_index"] == old_slot)
  out["image_index"] = np.where(newline, new_slot, out["image_index"]).astype(np.int32)
  return out

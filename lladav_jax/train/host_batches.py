"""The host-batch iterator protocol of the train loop, and a synthetic source that implements it.

A host-batch iterator yields, for each step, this process's rows of the global batch as a dict of
NumPy arrays exactly as `samples.collate` builds them (with `labels`, IGNORE_LABEL
where not supervised), and has `get_state()` -> JSON-able dict and `set_state(state)` (what grain's
DatasetIterator provides), so its position goes into every checkpoint.

`SyntheticSource` makes deterministic random samples (text, and images as random crops) from
(seed, index) alone, for tests, benchmarks and smoke runs of the CLI.
"""

import dataclasses
import os
from typing import Iterator, Protocol

import numpy as np

from lladav_jax.images.crops import KIND_ANYRES, KIND_SINGLE, Visual
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.samples import Sample, build_sample, collate
from lladav_jax.tokens import IGNORE_LABEL, IMAGE_PLACEHOLDER_ID

REJECTS_DIR = "rejects"  # in the workdir: the pipeline's rejects log, one file per process


class HostBatchIterator(Protocol):
  def __iter__(self) -> Iterator[dict[str, np.ndarray]]: ...

  def __next__(self) -> dict[str, np.ndarray]: ...

  def get_state(self) -> dict: ...

  def set_state(self, state: dict) -> None: ...


@dataclasses.dataclass(frozen=True)
class SyntheticSource:
  """Sample i: a prompt (optionally with one image) and a supervised response, from (seed, i)."""

  config: LLaDAVConfig
  num_examples: int
  seed: int = 0
  prompt_tokens: tuple[int, int] = (4, 16)  # [low, high) lengths
  response_tokens: tuple[int, int] = (4, 24)
  image_fraction: float = 0.0

  def __len__(self) -> int:
    return self.num_examples

  def __getitem__(self, index: int) -> Sample:
    cfg = self.config
    rng = np.random.default_rng([self.seed, int(index)])
    # Ordinary ids only: below the vocabulary and away from the special ids of the real tokenizer.
    high = min(cfg.text.vocab_size, cfg.tokens.bos)
    prompt = rng.integers(1, high, rng.integers(*self.prompt_tokens)).tolist()
    response = rng.integers(1, high, rng.integers(*self.response_tokens)).tolist()
    visuals = []
    if rng.random() < self.image_fraction:
      prompt = prompt[:1] + [IMAGE_PLACEHOLDER_ID] + prompt[1:]
      visuals = [self._random_visual(rng)]
    ids = prompt + response
    labels = [IGNORE_LABEL] * len(prompt) + response
    turns = [0] * len(prompt) + [1] * len(response)
    return build_sample(ids, visuals, cfg, labels=labels, turn_ids=turns, sample_id=f"synthetic[{index}]")

  def _random_visual(self, rng: np.random.Generator) -> Visual:
    size = self.config.vision.image_size
    if self.config.is_anyres:  # a square image: base crop + one tile
      crops = rng.uniform(-1, 1, (2, size, size, 3)).astype(np.float32)
      return Visual(KIND_ANYRES, crops, (size, size), grid=(1, 1))
    return Visual(KIND_SINGLE, rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32), (size, size))


class ShardedBatches:
  """Rows [row_start, row_stop) of each global batch of a source, one sample per row, in order.

  Global batch k holds samples k * global_batch + r (r = row), wrapping around the source, so every
  process reading its own rows sees exactly the global batch a single process would.
  """

  def __init__(self, source, *, global_batch: int, rows: tuple[int, int], seq_len: int, max_crops: int):
    self.source, self.global_batch, self.rows = source, global_batch, rows
    self.seq_len, self.max_crops = seq_len, max_crops
    self.next_batch = 0

  def __iter__(self):
    return self

  def __next__(self) -> dict[str, np.ndarray]:
    start = self.next_batch * self.global_batch
    samples = [[self.source[(start + r) % len(self.source)]] for r in range(*self.rows)]
    self.next_batch += 1
    return collate(samples, self.seq_len, self.max_crops, self.source.config)

  def get_state(self) -> dict:
    return {"next_batch": self.next_batch}

  def set_state(self, state: dict) -> None:
    self.next_batch = int(state["next_batch"])


def open_host_batches(config, model_config: LLaDAVConfig, rows: tuple[int, int], workdir: str
                      ) -> tuple[HostBatchIterator, int]:
  """This process's host-batch iterator for the run config, and the number of examples in one epoch.

  `config.train.data_source`: "pipeline" (lladav_jax.data configured by `config.data`; its rejects log
  goes to `workdir/rejects/` unless `config.data.rejects_dir` says otherwise), or "synthetic"
  (SyntheticSource configured by `config.train.synthetic`).
  """
  train = config.train
  if train.data_source == "synthetic":
    synthetic = train.synthetic
    source = SyntheticSource(model_config, num_examples=synthetic.num_examples, seed=config.seed,
                             image_fraction=synthetic.image_fraction)
    batches = ShardedBatches(source, global_batch=train.global_batch_size, rows=rows,
                             seq_len=synthetic.seq_len, max_crops=synthetic.max_crops)
    return batches, len(source)
  if train.data_source == "pipeline":
    return open_pipeline_batches(config, model_config, rows, os.path.join(workdir, REJECTS_DIR))
  raise ValueError(f"config.train.data_source = {train.data_source!r}; choices: 'pipeline', 'synthetic'")


def open_pipeline_batches(config, model_config: LLaDAVConfig, rows: tuple[int, int], rejects_dir: str
                          ) -> tuple[HostBatchIterator, int]:
  """lladav_jax.data's grain pipeline: `config.data` with batch_size = this process's rows (and the rejects
  log in `rejects_dir` unless the config names one); each process reads its own shard of the records
  (shard = process index)."""
  import jax

  from lladav_jax import data

  data_config = data.data_config(config.data)
  data_config = dataclasses.replace(data_config, batch_size=rows[1] - rows[0],
                                    rejects_dir=data_config.rejects_dir or rejects_dir)
  tokenizer = data.Tokenizer.from_dir(config.train.tokenizer_dir)
  num_examples = len(data.RecordSource(list(data_config.sources), data_config.index_dir, seed=data_config.seed))
  iterator = data.make_data_iterator(data_config, model_config, tokenizer, shard_index=jax.process_index(),
                                     shard_count=jax.process_count())
  return iterator, num_examples

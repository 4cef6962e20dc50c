"""The grain pipeline: records -> shuffled, per-process shards -> examples (in worker processes) ->
batches, with a checkpointable iterator.

  RecordSource -> shuffle(seed; a new order every epoch) -> repeat(num_epochs) -> slice per JAX process
  -> map(ExampleBuilder) -> worker processes (mp_prefetch) -> batches (padding / packing, rejects
  counted and logged) -> thread prefetch.

Process p of P reads records p, p + P, ... of the shuffled stream: shards are disjoint, cover the data,
and differ in size by at most one record per epoch. The iterator's state (`get_state`, a JSON-ready
dict) says where the next batch starts and holds the reject counters; `set_state` on a fresh iterator
built with the same config and worker count continues with exactly the same next batch.
"""

import dataclasses
import logging
from typing import Any

import grain
import numpy as np
from absl import flags

from lladav_jax.data import batching, rejects, workers
from lladav_jax.data.chat_format import ChatEncoder
from lladav_jax.data.config import PADDING_UPSTREAM, DataConfig
from lladav_jax.data.examples import ExampleBuilder, sample_from_example
from lladav_jax.data.sources import RecordSource, SourceError
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.model_config import LLaDAVConfig

class DataError(RuntimeError):
  """The data as configured cannot feed a run (e.g. every record is rejected)."""


COUNTERS = ("accepted", "truncated", "dropped_at_end") + rejects.REASONS
# The rejected fraction is judged once this many records were read (or one pass over the shard, if shorter).
REJECT_CHECK_RECORDS = 100


def rejected_fraction_problem(counts: dict[str, int], examples: dict[str, str], limit: float,
                              log_path: str | None) -> str | None:
  """Why the records read so far cannot feed a run (more than `limit` of them rejected), or None."""
  rejected = {reason: counts.get(reason, 0) for reason in rejects.REASONS if counts.get(reason, 0)}
  read = counts.get("accepted", 0) + sum(rejected.values())
  if not read or sum(rejected.values()) <= limit * read:
    return None
  main = max(rejected, key=rejected.get)
  example = examples.get(main, "see the rejects log")
  others = ", ".join(f"{reason} {count}" for reason, count in rejected.items() if reason != main)
  return (f"{sum(rejected.values())} of {read} records read were rejected, more than "
          f"data.max_rejected_fraction = {limit:g}: mostly {main} ({rejected[main]}; e.g. {example})"
          + (f"; also {others}" if others else "") + f". Are the data paths and folders right? Rejects log: {log_path}")


@dataclasses.dataclass(frozen=True)
class _BatchPlan:
  """What the main process needs to turn examples into batches."""

  config: DataConfig
  model_config: LLaDAVConfig
  max_length: int
  seq_buckets: tuple[int, ...]
  pad_id: int
  rejects_path: str | None
  specs_paths: tuple[str, ...]
  records_per_pass: int  # of this shard, in one epoch


class _BatchIterDataset(grain.IterDataset):

  def __init__(self, parent: grain.IterDataset, plan: _BatchPlan):
    super().__init__(parent)
    self._plan = plan

  def __iter__(self):
    return _BatchIterator(self._parent.__iter__(), self._plan)


class _BatchIterator(grain.DatasetIterator):
  """Groups examples into batches; rejects are counted and logged here, in the main process.

  A packed batch ends when an example fits no row; that example opens the next batch, so the state
  saved after a batch is the parent's state from just before that example was read.
  """

  def __init__(self, parent: grain.DatasetIterator, plan: _BatchPlan):
    super().__init__(parent)
    self._plan = plan
    self._log = rejects.RejectLog(plan.rejects_path)
    self._counts = dict.fromkeys(COUNTERS, 0)
    self._examples: dict[str, str] = {}  # reason -> the detail of its first reject
    self._pending = None  # (example, parent state before it, counters before it)
    self._consecutive_rejects = 0
    self._resume = None  # (parent state, counters, examples) where the next batch starts; None = from the start

  def _read(self, want_state: bool) -> tuple[dict, Any, dict]:
    """The next accepted example, with the parent state and counters from just before it."""
    while True:
      state = self._parent.get_state() if want_state else None
      counts = dict(self._counts)
      element = next(self._parent)
      if "reject" in element:
        self._counts[element["reject"]] += 1
        self._consecutive_rejects += 1
        entry = self._log_entry(element, element["reject"], element["detail"])
        self._examples.setdefault(element["reject"], entry["detail"])
        if self._consecutive_rejects >= self._plan.config.max_consecutive_rejects:
          reasons = {k: v for k, v in self._counts.items() if k in rejects.REASONS and v}
          raise DataError(f"{self._consecutive_rejects} records in a row were rejected (so far {reasons}); the last: "
                          f"{entry['detail']}. Are the data paths and folders right? Rejects log: "
                          f"{self._plan.rejects_path}")
        read = self._counts["accepted"] + sum(self._counts[reason] for reason in rejects.REASONS)
        if read >= min(REJECT_CHECK_RECORDS, self._plan.records_per_pass):
          problem = rejected_fraction_problem(self._counts, self._examples, self._plan.config.max_rejected_fraction,
                                              self._plan.rejects_path)
          if problem:
            raise DataError(problem)
        continue
      self._consecutive_rejects = 0
      self._counts["accepted"] += 1
      if element["truncated"]:
        self._counts["truncated"] += 1
        self._log_entry(element, "truncated", element["truncated"])
      return element, state, counts

  def _log_entry(self, element: dict, reason: str, detail: str) -> dict:
    entry = {"reason": reason, "detail": detail, "source": self._plan.specs_paths[element["source"]],
             "index": int(element["index"]), "id": element["id"]}
    self._log.write(entry)
    logging.debug("record %s %s: %s", entry["id"], reason, detail)
    return entry

  def __next__(self) -> dict:
    plan, cfg = self._plan, self._plan.config
    examples, rows = [], None
    packer = batching.RowPacker(cfg.batch_size, plan.seq_buckets[-1], cfg.crop_buckets[-1]) if cfg.packing else None
    if self._pending is not None:
      packer.add(sample_from_example(self._pending[0]))
      examples.append(self._pending[0])
      self._pending = None
    try:
      while packer is not None or len(examples) < cfg.batch_size:
        example, state, counts = self._read(want_state=packer is not None)
        if packer is not None and not packer.add(sample_from_example(example)):
          self._pending = (example, state, counts)
          break
        examples.append(example)
    except StopIteration:  # the end of a finite run: a last, partial batch, unless dropped
      if not examples or cfg.drop_remainder:
        self._counts["dropped_at_end"] += len(examples)
        self._resume = (self._parent.get_state(), dict(self._counts), dict(self._examples))
        raise
    if self._pending is not None:
      self._resume = (self._pending[1], self._pending[2], dict(self._examples))
    else:
      self._resume = (self._parent.get_state(), dict(self._counts), dict(self._examples))
    if packer is not None:
      rows = packer.rows
    elif cfg.padding == PADDING_UPSTREAM:
      group = cfg.pad_group_size or cfg.batch_size
      rows = [[s] for g in range(0, len(examples), group)
              for s in batching.upstream_padding(examples[g:g + group], plan.pad_id, plan.max_length)]
    else:
      rows = [[sample_from_example(e)] for e in examples]
    return batching.make_batch(rows, cfg.batch_size, plan.seq_buckets, cfg.crop_buckets, plan.model_config)

  def get_state(self) -> dict:
    if self._resume is None:
      self._resume = (self._parent.get_state(), dict(self._counts), dict(self._examples))
    state, counts, examples = self._resume
    return {"parent": state, "counts": dict(counts), "examples": dict(examples)}

  def set_state(self, state: dict) -> None:
    self._parent.set_state(state["parent"])
    self._counts = dict.fromkeys(COUNTERS, 0)
    self._counts.update(state["counts"])
    self._examples = dict(state.get("examples", {}))  # states saved before examples were kept have none
    self._pending = None
    self._resume = (state["parent"], dict(self._counts), dict(self._examples))

  def close(self) -> None:
    self._log.close()
    super().close()


class DataIterator:
  """Batches (dicts as `models.collate` returns them, `labels` included) with a checkpointable state.

  get_state(): JSON-ready dict to save per process; set_state(state) resumes. stats(): counters of
  the batches returned so far (accepted, truncated, and one per reject reason).
  """

  def __init__(self, dataset: grain.IterDataset, data_config: DataConfig, rejects_path: str | None):
    self._iterator = dataset.__iter__()
    self._max_rejected_fraction = data_config.max_rejected_fraction
    self._rejects_path = rejects_path

  def __iter__(self):
    return self

  def __next__(self) -> dict:
    return next(self._iterator)

  def get_state(self) -> dict:
    return self._iterator.get_state()

  def set_state(self, state: dict) -> None:
    self._iterator.set_state(state)

  def stats(self) -> dict[str, int]:
    return dict(self.get_state()["counts"])

  def check_rejects(self) -> None:
    """DataError when more than `max_rejected_fraction` of the records read so far were rejected (the
    pipeline checks this itself only once it has read enough records; call it at the end of a run)."""
    state = self.get_state()
    problem = rejected_fraction_problem(state["counts"], state["examples"], self._max_rejected_fraction,
                                        self._rejects_path)
    if problem:
      raise DataError(problem)

  @property
  def grain_iterator(self) -> grain.DatasetIterator:
    """For grain's own checkpoint handlers (same state as get_state)."""
    return self._iterator

  def close(self) -> None:
    """Stops the worker processes and closes the rejects log; the iterator cannot be used after."""
    if self._iterator is not None:
      self._iterator.close()
      self._iterator = None  # collected now, while the interpreter is whole (grain's __del__ closes again)


def pad_to_common_shape(batch: dict, model_config: LLaDAVConfig) -> dict:
  """Pads this process's batch to the largest (length, crops) bucket any JAX process has at this step,
  so that global arrays can be built from the process-local batches. A collective: every process
  calls it once per step. Nothing happens in a single-process run."""
  import jax  # only for multi-process runs
  if jax.process_count() == 1:
    return batch
  from jax.experimental import multihost_utils
  mine = np.asarray([batch["input_ids"].shape[1], batch["pixel_values"].shape[1]], np.int32)
  length, crops = np.asarray(multihost_utils.process_allgather(mine)).reshape(-1, 2).max(axis=0)
  return batching.pad_batch_to(batch, int(length), int(crops), model_config)


def _default_shard() -> tuple[int, int]:
  import jax  # only when the caller does not say which shard
  return jax.process_index(), jax.process_count()


def make_dataset(data_config: DataConfig, model_config: LLaDAVConfig, tokenizer: Tokenizer, *,
                 shard_index: int | None = None, shard_count: int | None = None) -> grain.IterDataset:
  """The pipeline as a grain IterDataset of batches (see the module docstring)."""
  cfg = data_config
  if shard_index is None or shard_count is None:
    shard_index, shard_count = _default_shard()
  if not 0 <= shard_index < shard_count:
    raise ValueError(f"shard {shard_index} of {shard_count}")
  tokenizer.check_token_ids(model_config.tokens)
  max_length = cfg.resolved_max_length(model_config.max_length)
  seq_buckets = cfg.resolved_seq_buckets(max_length)
  source = RecordSource(list(cfg.sources), cfg.index_dir, seed=cfg.seed)
  if len(source) == 0:
    raise SourceError(f"no records in {', '.join(s.path for s in cfg.sources)}")
  ds = grain.MapDataset.source(source)
  if cfg.shuffle:
    ds = ds.shuffle(seed=cfg.seed)
  ds = ds.repeat(cfg.num_epochs)[shard_index::shard_count]
  ds = ds.map(ExampleBuilder(cfg.sources, ChatEncoder(tokenizer), model_config, cfg, max_length))
  read = grain.ReadOptions(num_threads=cfg.read_threads, prefetch_buffer_size=max(1, cfg.worker_buffer_size))
  it = ds.to_iter_dataset(read)
  if cfg.num_workers > 0:
    # grain's worker processes read absl flags; outside absl.app.run nothing has parsed them yet.
    if not flags.FLAGS.is_parsed():
      flags.FLAGS.mark_as_parsed()
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=cfg.num_workers,
                                                     per_worker_buffer_size=cfg.worker_buffer_size),
                        worker_init_fn=workers.parent_watch())
  plan = _BatchPlan(cfg, model_config, max_length, seq_buckets, tokenizer.pad_id,
                    rejects.reject_log_path(cfg.rejects_dir, shard_index, shard_count),
                    tuple(s.path for s in cfg.sources), records_per_pass=-(-len(source) // shard_count))
  it = _BatchIterDataset(it, plan)
  if cfg.prefetch_batches > 0:
    it = grain.experimental.ThreadPrefetchIterDataset(it, prefetch_buffer_size=cfg.prefetch_batches)
  return it


def make_data_iterator(data_config: DataConfig, model_config: LLaDAVConfig, tokenizer: Tokenizer, *,
                       shard_index: int | None = None, shard_count: int | None = None) -> DataIterator:
  """Batches for this process (shard defaults: jax.process_index() of jax.process_count())."""
  if shard_index is None or shard_count is None:
    shard_index, shard_count = _default_shard()
  return DataIterator(make_dataset(data_config, model_config, tokenizer, shard_index=shard_index,
                                   shard_count=shard_count), data_config,
                      rejects.reject_log_path(data_config.rejects_dir, shard_index, shard_count))

"""The training loop: set up the sharded step, start (resume / earlier params / random), run, report.

Startup order: the latest complete checkpoint in `workdir`, else `checkpoint.init_from` (anything
`load_pretrained` reads, an earlier stage's workdir included: params only, fresh optimiser), else a
random init (with LoRA, the base from `init_from` gets fresh adapters, train/adapters.py, and the
adapters alone are written to WORKDIR/adapters at the end). Each process feeds its own rows of every
global batch from its host-batch iterator (see host_batches.py), whose state is saved with every
checkpoint. SIGTERM saves at the next step boundary and stops.
"""

import dataclasses
import logging
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
from ml_collections import ConfigDict

from lladav_jax import multihost, run_config, sharding
from lladav_jax.checkpoints import fitting
from lladav_jax.checkpoints.pretrained import load_pretrained
from lladav_jax.checkpoints.workdir import Checkpointer, describe
from lladav_jax.data.pipeline import DataError
from lladav_jax.data.rejects import REASONS
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import abstract_inputs
from lladav_jax.tokens import IGNORE_LABEL
from lladav_jax.train import adapters, metrics, optimizer, preflight
from lladav_jax.train.host_batches import REJECTS_DIR, HostBatchIterator, open_host_batches
from lladav_jax.train.state import TrainState, sharded_init, with_params, with_shardings
from lladav_jax.train.step import LABELS, jit_train_step, make_train_step

log = logging.getLogger("lladav_jax.train")


class TrainingDiverged(RuntimeError):
  """Too many optimiser steps in a row had a non-finite loss or gradient."""


@dataclasses.dataclass
class TrainSetup:
  """Everything about a run that follows from the config, before any data: the model, mesh, state
  layout and the jitted step."""

  config: ConfigDict
  model: LLaDAV
  mesh: Any
  rules: Any
  tx: Any
  labels: Any
  abstract_state: TrainState
  state_shardings: TrainState
  init: Any  # () -> TrainState, random, in its shardings
  batch_shardings: dict  # of the arrays the step consumes (their length and crop count may vary)
  train_step: Any  # (state, batch) -> (state, metrics), jitted, state donated; compiles once per shape
  total_steps: int

  def flops_per_step(self, seq_len: int, max_crops: int) -> float:
    return metrics.step_flops(self.model.config, self.config.train.global_batch_size, seq_len, max_crops,
                              self.config.optim.trainable)


def batch_spec(config: ConfigDict, model_config, seq_len: int, max_crops: int) -> dict[str, jax.ShapeDtypeStruct]:
  """Global shapes of the arrays the step consumes, for rows of `seq_len` with `max_crops` crops."""
  b, length = config.train.global_batch_size, seq_len
  spec = abstract_inputs(model_config, b, length, max_crops)
  spec[LABELS] = jax.ShapeDtypeStruct((b, length), jnp.int32)
  if config.train.dialogue_causal:
    spec["turn_ids"] = jax.ShapeDtypeStruct((b, length), jnp.int32)
  return spec


def setup(config: ConfigDict, total_steps: int, devices=None, model_config=None) -> TrainSetup:
  """The model, mesh, sharded state layout and jitted step of a run of `total_steps` optimiser steps
  (model_config: the run config's, unless given, e.g. fitted to the checkpoint it starts from)."""
  if model_config is None:
    model_config = preflight.check_config(config)
  train = config.train
  model = LLaDAV(model_config, run_config.compute_config(config))
  mesh, rules = preflight.mesh_and_rules(config, devices)
  preflight.check_batch_layout(train, mesh, rules)
  tx, labels, abstract_state, state_shardings, init = sharded_init(
      model, lambda params: optimizer.make_optimizer(config.optim, params, total_steps), mesh, rules, config.seed)
  batch_shardings = {k: sharding.batch_sharding(mesh, v.ndim, rules)
                     for k, v in batch_spec(config, model_config, 1, 1).items()}
  step = make_train_step(model, tx, optimizer.trainable_paths(labels), micro_batches=train.micro_batches,
                         mask_eps=train.mask_eps, dialogue_causal=train.dialogue_causal,
                         complementary_masking=train.complementary_masking,
                         schedule=optimizer.hf_cosine_schedule(
                             config.optim.lr, total_steps,
                             optimizer.warmup_steps(total_steps, config.optim.warmup_ratio)))
  return TrainSetup(config, model, mesh, rules, tx, labels, abstract_state, state_shardings, init,
                    batch_shardings, jit_train_step(step, state_shardings, batch_shardings, mesh, rules),
                    total_steps)


def load_init_params(path: str, p: TrainSetup) -> Any:
  """Params from an earlier stage's workdir, a converted checkpoint or a LLaDA-V Hugging Face
  directory (`load_pretrained`), read straight into their shardings; CheckpointMismatch names every
  model field in which it differs from the run's model (checkpoints/fitting.py)."""
  compute = p.model.compute
  loaded = load_pretrained(path, scan_layers=compute.scan_layers, dtype=compute.param_dtype, mesh=p.mesh,
                           rules=p.rules)
  fitting.fitted_config(loaded.config, p.model.config, f"config.checkpoint.init_from {path}")
  return loaded.params


def initial_state(config: ConfigDict, p: TrainSetup, ckpt: Checkpointer,
                  batches: HostBatchIterator) -> tuple[TrainState, str]:
  latest = ckpt.latest_step()
  if latest is not None:
    target = with_shardings(p.abstract_state, p.state_shardings)
    saved = ckpt.restore(params=target.params, opt_state=target.opt_state, progress=target.progress, step=latest)
    batches.set_state(saved.data)
    return TrainState.from_checkpoint(saved.params, saved.opt_state, saved.progress), f"resuming from step {latest}"
  if config.checkpoint.init_from:
    params = load_init_params(config.checkpoint.init_from, p)
    if p.model.compute.lora is not None:
      params = adapters.attach(params, p.abstract_state.params, p.state_shardings.params, p.model.compute.lora,
                               config.seed)
    return with_params(p.state_shardings, params, p.tx, config.seed), f"params from {config.checkpoint.init_from}"
  return p.init(), "random init"


def check_host_batch(host: dict, keys, rows: int, vocab_size: int):
  """Keys and rows against the setup, ids and labels against the vocabulary: bad data fails by name."""
  length = host["input_ids"].shape[1]
  for key in keys:
    if key not in host:
      raise KeyError(f"host batch has no {key!r} (keys: {sorted(host)})")
    if host[key].shape[0] != rows or (key != "pixel_values" and host[key].shape[1] != length):
      raise ValueError(f"host batch {key!r} has shape {tuple(host[key].shape)}; this process holds {rows} "
                       f"rows of the global batch, of {length} tokens")
  labels = host[LABELS]
  for key, values in (("input_ids", host["input_ids"]), (LABELS, labels[labels != IGNORE_LABEL])):
    if values.size and (values.min() < 0 or values.max() >= vocab_size):
      bad = values[(values < 0) | (values >= vocab_size)][0]
      raise ValueError(f"host batch {key!r} holds id {int(bad)} outside the vocabulary [0, {vocab_size})")


def total_steps_for(config: ConfigDict, num_examples: int) -> int:
  if config.train.num_steps > 0:
    return config.train.num_steps
  steps = num_examples // config.train.global_batch_size * config.train.num_epochs
  if steps <= 0:
    raise preflight.RunConfigError(
        f"config.train.global_batch_size = {config.train.global_batch_size}: the data's {num_examples} "
        "examples make no full batch (set a smaller batch or config.train.num_steps)")
  return steps


def train(config: ConfigDict, workdir: str) -> dict[int, dict]:
  """Runs (or resumes) training in `workdir`. Returns the metrics logged by this run, by step.

  Settings are checked before anything is read or written (preflight.py)."""
  main_process = jax.process_index() == 0
  model_config = preflight.check_config(config)
  # The batch layout decides which rows this process reads: make the mesh first.
  mesh, rules = preflight.mesh_and_rules(config)
  preflight.check_batch_layout(config.train, mesh, rules)
  model_config = preflight.fitted_model_config(config, model_config, workdir)
  try:
    os.makedirs(workdir, exist_ok=True)
  except OSError as e:
    raise preflight.RunConfigError(f"workdir {workdir}: cannot create it ({e.strerror})") from None
  rows = multihost.process_rows(sharding.batch_sharding(mesh, 1, rules), config.train.global_batch_size)
  batches, num_examples = open_host_batches(config, model_config, rows, workdir)
  try:
    p = setup(config, total_steps_for(config, num_examples), model_config=model_config)
    options = config.checkpoint
    ckpt = Checkpointer(workdir, every_steps=options.every_steps, keep=options.keep, async_save=options.async_save)
    state, origin = initial_state(config, p, ckpt, batches)
  except BaseException:
    close_batches(batches)
    raise
  step = int(jax.device_get(state.step))
  if main_process:
    log.info("%s; step %d of %d on %d devices (%d processes)", origin, step, p.total_steps,
             jax.device_count(), jax.process_count())
    describe(workdir, model_config, config.compute.scan_layers, config.train.tokenizer_dir or None)

  writer = metrics.MetricWriter(workdir, enabled=main_process, start_step=step)
  peak = metrics.peak_flops_per_device(jax.devices()[0], config.train.peak_flops_per_device)
  stop = multihost.StopSignal().install()
  from tqdm import tqdm
  progress = tqdm(total=p.total_steps, initial=step, disable=not main_process, desc="train",
                  dynamic_ncols=True)
  logged: dict[int, dict] = {}
  clock = [time.perf_counter()]

  def report(at_step: int, device_metrics: dict, shape: tuple[int, int]):
    m = {k: v.item() for k, v in jax.device_get(device_metrics).items()}
    now = time.perf_counter()
    seconds, clock[0] = now - clock[0], now
    scalars = dict(loss=m["loss"], learning_rate=m["learning_rate"], grad_norm=m["grad_norm"],
                   skipped_steps=m["skipped_steps"], samples=m["samples"], masked_tokens=m["masked_tokens"],
                   step_seconds=seconds, tokens_per_second=m["tokens"] / seconds)
    if peak:
      scalars["mfu"] = p.flops_per_step(*shape) / seconds / (peak * jax.device_count())
    rejected = rejected_counts(batches)
    scalars.update({f"rejected_{reason}": count for reason, count in rejected.items()})
    logged[at_step] = scalars
    if at_step % config.train.log_every == 0 or at_step == p.total_steps:
      writer.write(at_step, scalars)
    progress.update(1)
    progress.set_postfix(loss=f"{m['loss']:.4f}", skipped=m["skipped_steps"],
                         **({"rejected": ",".join(f"{r}:{n}" for r, n in rejected.items())} if rejected else {}))
    if m["consecutive_skips"] >= config.train.max_consecutive_skips:
      raise TrainingDiverged(f"step {at_step}: {m['consecutive_skips']} steps in a row had a non-finite "
                             f"loss or gradient (train.max_consecutive_skips = "
                             f"{config.train.max_consecutive_skips})")

  pending = None
  try:
    while step < p.total_steps:
      try:  # the next batch is read while the previous step runs
        host = next(batches)
      except StopIteration:
        raise DataError(f"the data ran out after step {step} of {p.total_steps}") from None
      check_host_batch(host, p.batch_shardings, rows[1] - rows[0], model_config.text.vocab_size)
      batch = multihost.global_batch({k: host[k] for k in p.batch_shardings}, p.batch_shardings,
                                     config.train.global_batch_size)
      if pending is not None:  # one step in flight at a time; costs only the dispatch latency
        report(*pending)
      state, device_metrics = p.train_step(state, batch)
      step += 1
      pending = (step, device_metrics, (host["input_ids"].shape[1], host["pixel_values"].shape[1]))
      stopping = stop.should_stop()
      ckpt.save(step, params=state.params, opt_state=state.opt_state, progress=state.progress,
                data=batches.get_state(), force=stopping or step == p.total_steps)
      if stopping:
        if main_process:
          log.info("stop requested: saved step %d", step)
        break
    if pending is not None:
      report(*pending)
    rejected = rejected_counts(batches)
    if hasattr(batches, "check_rejects"):  # a short run may end before the pipeline judged the fraction itself
      batches.check_rejects()
    if p.model.compute.lora is not None:
      adapters.save(workdir, state.params, lora=p.model.compute.lora, scan_layers=config.compute.scan_layers,
                    base=config.checkpoint.init_from, config=model_config)
  finally:
    close_batches(batches)
    stop.uninstall()
    progress.close()
    ckpt.close()
    writer.close()
  if main_process:
    records = metrics.read_metrics(writer.jsonl).values()
    if records:
      metrics.plot_loss(records, os.path.join(workdir, "loss.png"))
    if rejected:
      log.info("rejected records (this process): %s; see %s", ", ".join(f"{r} {n}" for r, n in rejected.items()),
               os.path.join(workdir, REJECTS_DIR))
  return logged


def rejected_counts(batches: HostBatchIterator) -> dict[str, int]:
  """{reason: records} rejected so far by this process's pipeline (nothing for other sources)."""
  if not hasattr(batches, "stats"):
    return {}
  return {reason: count for reason, count in batches.stats().items() if reason in REASONS and count}


def close_batches(batches: HostBatchIterator) -> None:
  """Stops the pipeline's worker processes (other sources have none)."""
  if hasattr(batches, "close"):
    batches.close()

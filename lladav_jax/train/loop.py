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
import numpy as np
from ml_collections import ConfigDict

from lladav_jax import multihost, run_config, sharding
from lladav_jax.checkpoints.pretrained import load_pretrained
from lladav_jax.checkpoints.workdir import Checkpointer, describe
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import abstract_inputs
from lladav_jax.tokens import IGNORE_LABEL
from lladav_jax.train import adapters, metrics, optimizer
from lladav_jax.train.host_batches import HostBatchIterator, open_host_batches
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


def setup(config: ConfigDict, total_steps: int, devices=None) -> TrainSetup:
  """The model, mesh, sharded state layout and jitted step of a run of `total_steps` optimiser steps."""
  model_config = run_config.model_config(config)
  if not 0 <= model_config.tokens.mask < model_config.text.vocab_size:
    raise ValueError(f"model.tokens.mask = {model_config.tokens.mask} is outside the vocabulary "
                     f"[0, {model_config.text.vocab_size})")
  train = config.train
  if train.global_batch_size % train.micro_batches:
    raise ValueError(f"train.global_batch_size {train.global_batch_size} is not divisible by "
                     f"train.micro_batches {train.micro_batches}")
  compute = run_config.compute_config(config)
  if train.dialogue_causal and compute.attention_impl == "splash":
    raise ValueError("train.dialogue_causal needs the turn-causal mask, which compute.attention_impl = 'splash' "
                     "cannot express; use 'blockwise', 'xla' or 'cudnn'")
  model = LLaDAV(model_config, compute)
  mesh = sharding.create_mesh(config.mesh.to_dict(), devices)
  rules = sharding.normalize_rules(config.logical_axis_rules)
  shards = batch_shards(mesh, rules)
  micro_rows = train.global_batch_size // train.micro_batches
  if micro_rows % shards:
    raise ValueError(f"a micro-batch of {micro_rows} rows (train.global_batch_size / train.micro_batches) "
                     f"cannot be split over the {shards} batch shards of mesh {dict(mesh.shape)}")
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


def batch_shards(mesh, rules) -> int:
  """Into how many parts the batch axis is split (the product of the batch's mesh axes)."""
  spec = sharding.batch_sharding(mesh, 1, rules).spec
  axes = spec[0] if spec and isinstance(spec[0], tuple) else (spec[0] if spec else None,)
  return int(np.prod([mesh.shape[a] for a in axes if a is not None]))


def load_init_params(path: str, p: TrainSetup) -> Any:
  """Params from an earlier stage's workdir, a converted checkpoint or a LLaDA-V Hugging Face
  directory (`load_pretrained`), read straight into their shardings; its towers must be the run's."""
  compute = p.model.compute
  loaded = load_pretrained(path, scan_layers=compute.scan_layers, dtype=compute.param_dtype, mesh=p.mesh,
                           rules=p.rules)
  want = p.model.config
  for part in ("text", "vision", "projector"):
    if getattr(loaded.config, part) != getattr(want, part):
      raise ValueError(f"{path}: its {part} config {getattr(loaded.config, part)} differs from the run "
                       f"config's {getattr(want, part)}")
  return loaded.params


def initial_state(config: ConfigDict, p: TrainSetup, ckpt: Checkpointer,
                  batches: HostBatchIterator) -> tuple[TrainState, str]:
  latest = ckpt.latest_step()
  if latest is not None:
    target = with_shardings(p.abstract_state, p.state_shardings)
    saved = ckpt.restore(params=target.params, opt_state=target.opt_state, progress=target.progress, step=latest)
    batches.set_state(saved.data)
    return TrainState.from_checkpoint(saved.params, saved.opt_state, saved.progress), f"resumed from step {latest}"
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
    raise ValueError(f"{num_examples} examples make no full batch of {config.train.global_batch_size}")
  return steps


def train(config: ConfigDict, workdir: str) -> dict[int, dict]:
  """Runs (or resumes) training in `workdir`. Returns the metrics logged by this run, by step."""
  os.makedirs(workdir, exist_ok=True)
  main_process = jax.process_index() == 0
  model_config = run_config.model_config(config)
  # The batch layout decides which rows this process reads: make the mesh first.
  mesh = sharding.create_mesh(config.mesh.to_dict())
  row_sharding = sharding.batch_sharding(mesh, 1, sharding.normalize_rules(config.logical_axis_rules))
  rows = multihost.process_rows(row_sharding, config.train.global_batch_size)
  batches, num_examples = open_host_batches(config, model_config, rows)
  p = setup(config, total_steps_for(config, num_examples))
  options = config.checkpoint
  ckpt = Checkpointer(workdir, every_steps=options.every_steps, keep=options.keep, async_save=options.async_save)
  state, origin = initial_state(config, p, ckpt, batches)
  step = int(jax.device_get(state.step))
  if main_process:
    log.info("%s; step %d of %d on %d devices (%d processes)", origin, step, p.total_steps,
             jax.device_count(), jax.process_count())
    describe(workdir, model_config, config.compute.scan_layers, config.train.tokenizer_dir or None)

  writer = metrics.MetricWriter(workdir, enabled=main_process)
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
    logged[at_step] = scalars
    if at_step % config.train.log_every == 0 or at_step == p.total_steps:
      writer.write(at_step, scalars)
    progress.update(1)
    progress.set_postfix(loss=f"{m['loss']:.4f}", skipped=m["skipped_steps"])
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
        raise RuntimeError(f"the data ran out after step {step} of {p.total_steps}") from None
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
    if p.model.compute.lora is not None:
      adapters.save(workdir, state.params, lora=p.model.compute.lora, scan_layers=config.compute.scan_layers,
                    base=config.checkpoint.init_from, config=model_config)
  finally:
    if hasattr(batches, "close"):  # the pipeline's worker processes
      batches.close()
    stop.uninstall()
    progress.close()
    ckpt.close()
    writer.close()
  if main_process:
    records = metrics.read_metrics(writer.jsonl).values()
    if records:
      metrics.plot_loss(records, os.path.join(workdir, "loss.png"))
  return logged

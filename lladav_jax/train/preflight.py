"""What a run must satisfy before anything is loaded or written.

Each problem is a RunConfigError whose message names the config field as an override spells it
(`config.train.global_batch_size`), or a CheckpointMismatch naming every model field in which the
starting params (`checkpoint.init_from`, or the workdir's own checkpoint on a resume) differ.
"""

from typing import Any, Callable

from ml_collections import ConfigDict
from ml_collections.config_flags import config_path as override_path

from lladav_jax import run_config, sharding
from lladav_jax.checkpoints import fitting, workdir
from lladav_jax.checkpoints.pretrained import load_config
from lladav_jax.data.config import data_config
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.train.optimizer import COMPONENTS

DATA_SOURCES = ("pipeline", "synthetic")


class RunConfigError(ValueError):
  """A run config (file or override) that cannot run; the message names the field."""


def _section(name: str, build: Callable[[], Any]) -> Any:
  """`build()`, its validation errors (the frozen dataclasses' ValueError / TypeError) named after the section."""
  try:
    return build()
  except (ValueError, TypeError) as e:
    raise RunConfigError(f"config.{name}: {e}") from None


def check_config(config: ConfigDict) -> LLaDAVConfig:
  """Every setting that needs neither devices nor files; returns the run's model config."""
  if config.checkpoint.init_from is None:
    raise RunConfigError("config.checkpoint.init_from is not set: this recipe fine-tunes a checkpoint "
                         "(--config.checkpoint.init_from=DIR)")
  model_config = _section("model", lambda: run_config.model_config(config))
  compute = _section("compute", lambda: run_config.compute_config(config))
  if config.train.dialogue_causal and compute.attention_impl == "splash":
    raise RunConfigError("config.train.dialogue_causal needs the turn-causal mask, which config.compute.attention_impl"
                         " = 'splash' cannot express; use 'blockwise', 'xla' or 'cudnn'")
  train, options = config.train, config.checkpoint
  checks = [
      (train.global_batch_size >= 1, "train.global_batch_size", "must be at least 1"),
      (train.micro_batches >= 1, "train.micro_batches", "must be at least 1"),
      (train.global_batch_size % max(train.micro_batches, 1) == 0, "train.global_batch_size",
       f"is not divisible by config.train.micro_batches = {train.micro_batches}"),
      (train.num_steps >= 0, "train.num_steps", "must be 0 (one pass of num_epochs) or more"),
      (train.num_epochs >= 1, "train.num_epochs", "must be at least 1"),
      (train.log_every >= 1, "train.log_every", "must be at least 1"),
      (train.data_source in DATA_SOURCES, "train.data_source", f"choices: {DATA_SOURCES}"),
      (set(config.optim.trainable) <= set(COMPONENTS), "optim.trainable", f"components are {COMPONENTS}"),
      (options.every_steps >= 1, "checkpoint.every_steps", "must be at least 1"),
      (options.keep is None or options.keep >= 1, "checkpoint.keep", "must be at least 1"),
  ]
  if train.data_source == "pipeline":
    checks.append((bool(train.tokenizer_dir), "train.tokenizer_dir",
                   "is empty: the data pipeline needs the LLaDA tokenizer (a directory with tokenizer.json)"))
    checks.append((bool(config.data.sources), "data.sources", "is empty: name the LLaVA .json / .jsonl files"))
    checks += [(bool(source.get("path")), f"data.sources[{i}].path", "is empty: name a LLaVA .json / .jsonl file")
               for i, source in enumerate(config.data.sources)]
  for ok, field, message in checks:
    if not ok:
      raise RunConfigError(f"config.{field} = {override_path.get_value(field, config)!r}: {message}")
  if train.data_source == "pipeline":
    data = _section("data", lambda: data_config(config.data))
    _section("data", lambda: data.resolved_seq_buckets(data.resolved_max_length(model_config.max_length)))
  return model_config


def mesh_and_rules(config: ConfigDict, devices=None):
  """The run's device mesh and normalised logical-axis rules."""
  mesh = _section("mesh", lambda: sharding.create_mesh(config.mesh.to_dict(), devices))
  rules = _section("logical_axis_rules", lambda: sharding.normalize_rules(config.logical_axis_rules))
  return mesh, rules


def check_batch_layout(train: ConfigDict, mesh, rules) -> None:
  """A micro-batch must split evenly over the batch shards of the mesh."""
  shards = sharding.batch_shards(mesh, rules)
  micro_rows = train.global_batch_size // train.micro_batches
  if micro_rows % shards:
    raise RunConfigError(f"config.train.global_batch_size = {train.global_batch_size}: a micro-batch of "
                         f"{micro_rows} rows (global_batch_size / micro_batches {train.micro_batches}) cannot be "
                         f"split over the {shards} batch shards of mesh {dict(mesh.shape)}")


def fitted_model_config(config: ConfigDict, model_config: LLaDAVConfig, workdir_path: str) -> LLaDAVConfig:
  """The run's model config checked against where its params come from: the workdir's latest checkpoint
  when it has one (a resume), else `checkpoint.init_from`; fields that only describe that checkpoint
  (checkpoints/fitting.py) are taken from it."""
  if workdir.is_workdir(workdir_path) and workdir.latest_step(workdir_path) is not None:
    saved, _ = workdir.read_description(workdir_path)
    return fitting.fitted_config(saved, model_config, f"the checkpoint in the workdir {workdir_path}")
  init_from = config.checkpoint.init_from
  if not init_from:
    return model_config
  try:
    checkpoint = load_config(init_from)
  except (ValueError, OSError) as e:
    raise RunConfigError(f"config.checkpoint.init_from = {init_from!r}: {one_line(e)}") from None
  return fitting.fitted_config(checkpoint, model_config, f"config.checkpoint.init_from {init_from}")


def one_line(error: BaseException) -> str:
  """An error's message on one line (multi-line messages, such as a list of problems, joined by '; ')."""
  lines = [line.strip(" -") for line in str(error).splitlines() if line.strip(" -")]
  return "; ".join(lines)

"""Checkpoints of a training run: orbax CheckpointManager over a Composite of

  params      the model's params (sharded arrays, written by every process)
  opt_state   the optimiser state
  progress    step, masking RNG, skip counters
  data        each process's host-batch iterator state, `process_{i}-of-{n}.json`

Saves are asynchronous; orbax writes each step into a temporary directory and renames it when every
item of every process is written, so a step counts only once it is complete (a run killed mid-save
resumes from the previous one). Params are a separate item so that a later stage can start from
an earlier stage's params alone.
"""

import dataclasses
import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath
from ml_collections import ConfigDict

from lladav_jax.train.state import TrainState

CHECKPOINT_DIR = "checkpoints"


class DataStateHandler(ocp.CheckpointHandler):
  """Each process writes (and reads back) its own iterator state as JSON."""

  @staticmethod
  def _file(directory: epath.Path) -> epath.Path:
    return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

  def save(self, directory: epath.Path, args: "DataStateSave"):
    directory.mkdir(parents=True, exist_ok=True)
    self._file(directory).write_text(json.dumps(args.state, sort_keys=True))

  def restore(self, directory: epath.Path, args: "DataStateRestore | None" = None) -> dict:
    path = self._file(directory)
    if not path.exists():
      found = sorted(p.name for p in directory.iterdir()) if directory.exists() else []
      raise FileNotFoundError(f"{path}: no data-iterator state for this process (found {found}); "
                              "resume with the same number of processes")
    return json.loads(path.read_text())

  def metadata(self, directory: epath.Path):
    return None

  def finalize(self, directory: epath.Path):
    pass

  def close(self):
    pass


@ocp.args.register_with_handler(DataStateHandler, for_save=True)
@dataclasses.dataclass
class DataStateSave(ocp.args.CheckpointArgs):
  state: dict


@ocp.args.register_with_handler(DataStateHandler, for_restore=True)
@dataclasses.dataclass
class DataStateRestore(ocp.args.CheckpointArgs):
  pass


def _progress(state: TrainState) -> dict:
  return dict(step=state.step, rng=state.rng, skipped_steps=state.skipped_steps,
              consecutive_skips=state.consecutive_skips)


def abstract_arrays(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the shardings that restored arrays must have."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


class Checkpointer:
  """Saves and restores TrainState + data-iterator state under `workdir/checkpoints`."""

  def __init__(self, workdir: str, options: ConfigDict, *, read_only: bool = False):
    self.directory = epath.Path(os.path.abspath(workdir)) / CHECKPOINT_DIR  # orbax needs absolute paths
    self.manager = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            # Every `every_steps` only (orbax would also save the first step); final and
            # preemption saves are forced by the loop.
            save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(options.every_steps),
            max_to_keep=options.keep,
            enable_async_checkpointing=options.async_save, cleanup_tmp_directories=not read_only,
            create=not read_only, read_only=read_only),
        item_names=("params", "opt_state", "progress", "data"),
    )

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, state: TrainState, data_state: dict, *, force: bool = False) -> bool:
    """Starts saving `state` as `step` (= state.step, passed so that deciding does not wait for the
    device) every `every_steps`, or now when forced. Returns whether a save was started."""
    return self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(state.params),
        opt_state=ocp.args.StandardSave(state.opt_state),
        progress=ocp.args.StandardSave(_progress(state)),
        data=DataStateSave(data_state),
    ), force=force)

  def restore(self, abstract_state: TrainState, shardings: TrainState, step: int | None = None
              ) -> tuple[TrainState, dict]:
    """(state placed in `shardings`, this process's data-iterator state) at `step` (default latest)."""
    step = self.latest_step() if step is None else step
    target = abstract_arrays(abstract_state, shardings)
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(target.params),
        opt_state=ocp.args.StandardRestore(target.opt_state),
        progress=ocp.args.StandardRestore(_progress(target)),
        data=DataStateRestore(),
    ))
    progress = restored.progress
    state = TrainState(step=progress["step"], params=restored.params, opt_state=restored.opt_state,
                       rng=progress["rng"], skipped_steps=progress["skipped_steps"],
                       consecutive_skips=progress["consecutive_skips"])
    return state, restored.data

  def restore_params(self, abstract_params: Any, param_shardings: Any, step: int | None = None) -> Any:
    """Only the params item (e.g. to start the next training stage)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no complete checkpoint to take params from")
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(abstract_arrays(abstract_params, param_shardings))))
    return restored.params

  def wait(self):
    self.manager.wait_until_finished()

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def is_training_workdir(path: str) -> bool:
  return (epath.Path(path) / CHECKPOINT_DIR).is_dir()


# What makes a workdir loadable without its run config: the model's config.json, the parameter
# layout, and a copy of the tokenizer (see `describe_workdir`, `lladav_jax.load_pretrained`).
WORKDIR_CONFIG = "config.json"
WORKDIR_INFO = "lladav_workdir.json"
WORKDIR_TOKENIZER = "tokenizer"


def describe_workdir(workdir: str, model_config, scan_layers: bool, tokenizer_dir: str | None) -> None:
  """Writes config.json, lladav_workdir.json and tokenizer/ into `workdir` (process 0 only)."""
  import shutil
  root = epath.Path(workdir)
  (root / WORKDIR_CONFIG).write_text(json.dumps(model_config.to_hf_config(), indent=1))
  (root / WORKDIR_INFO).write_text(json.dumps({"scan_layers": bool(scan_layers)}))
  if tokenizer_dir and os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
    target = root / WORKDIR_TOKENIZER
    target.mkdir(exist_ok=True)
    for name in os.listdir(tokenizer_dir):
      if name.startswith(("tokenizer", "special_tokens")) and os.path.isfile(os.path.join(tokenizer_dir, name)):
        shutil.copy2(os.path.join(tokenizer_dir, name), str(target / name))

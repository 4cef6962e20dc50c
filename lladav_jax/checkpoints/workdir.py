"""A training run's workdir: its checkpoints, and what makes it loadable without the run config.

  checkpoints/             orbax CheckpointManager, one Composite per saved step:
      params               the model's params (sharded arrays, written by every process)
      opt_state            the optimiser state
      progress             step, masking RNG, skip counters (scalars)
      data                 each process's host-batch iterator state, `process_{i}-of-{n}.json`
  config.json              the model's LLaDAVConfig.to_hf_config()
  lladav_workdir.json      the parameter layout ({"scan_layers": ...})
  tokenizer/               a copy of the run's tokenizer

Saves are asynchronous; orbax writes each step into a temporary directory and renames it when every
item of every process is written, so a step counts only once it is complete (a run killed mid-save
resumes from the previous one). Params are a separate item so that a later stage (or
`load_pretrained`) can take an earlier run's params alone.
"""

import contextlib
import dataclasses
import json
import logging
import os
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from lladav_jax.atomic_files import write_atomic
from lladav_jax.model_config import LLaDAVConfig

CHECKPOINT_DIR = "checkpoints"
CONFIG_FILE = "config.json"
INFO_FILE = "lladav_workdir.json"
TOKENIZER_DIR = "tokenizer"
ITEMS = ("params", "opt_state", "progress", "data")


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


@dataclasses.dataclass(frozen=True)
class Saved:
  """One step's items, as restored (arrays in their target shardings)."""

  params: Any
  opt_state: Any
  progress: dict
  data: dict


class _ReadOnlyNotice(logging.Filter):
  """orbax announces every read-only manager with a warning; reading a workdir is not worth one."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith("Given directory is read only")


@contextlib.contextmanager
def _without_read_only_notice():
  notice = _ReadOnlyNotice()
  absl_logger = logging.getLogger("absl")  # orbax logs through absl.logging
  absl_logger.addFilter(notice)
  try:
    yield
  finally:
    absl_logger.removeFilter(notice)


class Checkpointer:
  """Saves and restores the items of a run under `workdir/checkpoints`.

  every_steps: save every this many steps (final and preemption saves are forced by the caller);
  keep: checkpoints kept (None: all); async_save: write in the background.
  """

  def __init__(self, workdir: str, *, every_steps: int = 1, keep: int | None = None, async_save: bool = False,
               read_only: bool = False):
    self.directory = epath.Path(os.path.abspath(workdir)) / CHECKPOINT_DIR  # orbax needs absolute paths
    if read_only:  # nothing that saves or deletes: orbax warns about each such option it has to drop
      options = ocp.CheckpointManagerOptions(read_only=True, create=False, cleanup_tmp_directories=False,
                                             save_interval_steps=0, enable_async_checkpointing=False)
    else:
      options = ocp.CheckpointManagerOptions(
          # Every `every_steps` only (orbax would also save the first step).
          save_decision_policy=ocp.checkpoint_managers.FixedIntervalPolicy(every_steps),
          max_to_keep=keep, enable_async_checkpointing=async_save, cleanup_tmp_directories=True)
    with _without_read_only_notice():
      self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=ITEMS)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def save(self, step: int, *, params: Any, opt_state: Any, progress: dict, data: dict,
           force: bool = False) -> bool:
    """Starts saving the items as `step` every `every_steps`, or now when forced (the step is passed
    so that deciding does not wait for the device). Returns whether a save was started."""
    return self.manager.save(step, args=ocp.args.Composite(
        params=ocp.args.StandardSave(params),
        opt_state=ocp.args.StandardSave(opt_state),
        progress=ocp.args.StandardSave(progress),
        data=DataStateSave(data),
    ), force=force)

  def restore(self, *, params: Any, opt_state: Any, progress: dict, step: int | None = None) -> Saved:
    """Every item at `step` (default: the latest); the arguments are the targets (ShapeDtypeStructs
    carrying shardings), the data state is this process's."""
    step = self.latest_step() if step is None else step
    restored = self.manager.restore(step, args=ocp.args.Composite(
        params=ocp.args.StandardRestore(params),
        opt_state=ocp.args.StandardRestore(opt_state),
        progress=ocp.args.StandardRestore(progress),
        data=DataStateRestore(),
    ))
    return Saved(restored.params, restored.opt_state, restored.progress, restored.data)

  def restore_params(self, targets: Any, step: int | None = None) -> Any:
    """Only the params item (targets: ShapeDtypeStructs carrying shardings)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError(f"{self.directory}: no complete checkpoint to take params from")
    restored = self.manager.restore(step, args=ocp.args.Composite(params=ocp.args.StandardRestore(targets)))
    return restored.params

  def close(self):
    self.manager.wait_until_finished()
    self.manager.close()


def read_params(workdir: str, targets: Any) -> Any:
  """The latest complete step's params of a workdir (targets: ShapeDtypeStructs carrying shardings)."""
  reader = Checkpointer(workdir, read_only=True)
  try:
    return reader.restore_params(targets)
  finally:
    reader.close()


def is_workdir(path: str) -> bool:
  """A training workdir that describes itself (see `describe`)."""
  return (epath.Path(path) / INFO_FILE).is_file()


def has_checkpoints(path: str) -> bool:
  return (epath.Path(path) / CHECKPOINT_DIR).is_dir()


def describe(workdir: str, model_config: LLaDAVConfig, scan_layers: bool, tokenizer_dir: str | None) -> None:
  """Writes config.json, lladav_workdir.json and tokenizer/ into `workdir` (call on process 0 only);
  each file is written whole, with the umask's permissions (copies do not keep the source's mode)."""
  root = epath.Path(workdir)
  write_atomic(root / CONFIG_FILE, json.dumps(model_config.to_hf_config(), indent=1))
  write_atomic(root / INFO_FILE, json.dumps({"scan_layers": bool(scan_layers)}))
  if tokenizer_dir and os.path.isfile(os.path.join(tokenizer_dir, "tokenizer.json")):
    target = root / TOKENIZER_DIR
    target.mkdir(exist_ok=True)
    for name in os.listdir(tokenizer_dir):
      source = os.path.join(tokenizer_dir, name)
      if name.startswith(("tokenizer", "special_tokens")) and os.path.isfile(source):
        with open(source, "rb") as f:
          write_atomic(target / name, f.read())


def latest_step(workdir: str) -> int | None:
  """The latest complete step saved in `workdir`, read without writing anything (None: none)."""
  if not has_checkpoints(workdir):
    return None
  reader = Checkpointer(workdir, read_only=True)
  try:
    return reader.latest_step()
  finally:
    reader.close()


def read_description(workdir: str) -> tuple[LLaDAVConfig, bool]:
  """(model config, scan_layers) of a described workdir."""
  root = epath.Path(workdir)
  info = json.loads((root / INFO_FILE).read_text())
  return LLaDAVConfig.from_hf_config(json.loads((root / CONFIG_FILE).read_text())), bool(info["scan_layers"])

"""The converted-checkpoint directory (format "lladav_jax.pretrained", version 1):

  config.json              LLaDAVConfig.to_hf_config() (with a nested vision_config) over the
                           source config's other keys
  params/                  orbax PyTree of plain arrays, the model's "params" collection; scanned
                           layers stacked under `layers` (see scan_layers below)
  tokenizer/               tokenizer files copied from the source, when it had any
  lladav_checkpoint.json   written last: format, version, source, scan_layers, dtypes, counts

Everything is written into a temporary sibling directory that is renamed into place only when
complete, so a directory without lladav_checkpoint.json is never a finished checkpoint. Outputs
of an export go through the same staging.
"""

import contextlib
import json
import os
import pathlib
import shutil
import socket
import sys
from typing import Any, Iterator

from lladav_jax.atomic_files import make_temporary_directory

FORMAT = "lladav_jax.pretrained"  # the on-disk format's name (docs/convert.md), whatever module reads it
FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
PARAMS_DIR = "params"
TOKENIZER_DIR = "tokenizer"
INFO_FILE = "lladav_checkpoint.json"

# Files that make up a Hugging Face tokenizer (and generation defaults), copied along.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "added_tokens.json", "vocab.json", "merges.txt", "chat_template.json", "chat_template.jinja",
                   "generation_config.json")


def is_checkpoint(path: str | pathlib.Path) -> bool:
  return (pathlib.Path(path) / INFO_FILE).is_file()


def read_info(path: str | pathlib.Path) -> dict[str, Any]:
  """lladav_checkpoint.json of a finished checkpoint; clear errors for anything else."""
  path = pathlib.Path(path)
  info_file = path / INFO_FILE
  if not info_file.is_file():
    if (path / PARAMS_DIR).exists():
      raise ValueError(f"{path}: has {PARAMS_DIR}/ but no {INFO_FILE}: an unfinished conversion; convert again")
    raise ValueError(f"{path}: not a converted lladav_jax checkpoint (no {INFO_FILE})")
  info = json.loads(info_file.read_text())
  if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
    raise ValueError(f"{info_file}: format {info.get('format')!r} version {info.get('format_version')!r}; "
                     f"this code reads {FORMAT!r} version {FORMAT_VERSION}")
  return info


def tokenizer_files(directory: str | pathlib.Path) -> list[pathlib.Path]:
  directory = pathlib.Path(directory)
  return [directory / name for name in TOKENIZER_FILES if (directory / name).is_file()]


PARTIAL_INFIX = ".partial-"
OWNER_FILE = ".owner.json"  # inside a staging directory: the host and pid of the run writing it


def _running_here(owner: dict) -> bool:
  """Whether the process that wrote `owner` may still be running (another host: assume so)."""
  if owner.get("host") != socket.gethostname():
    return True
  pid = owner.get("pid")
  if type(pid) is not int or pid <= 0:  # no owner recorded
    return False
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:  # alive, another user's
    return True
  return True


def remove_stale_partials(out: pathlib.Path) -> list[pathlib.Path]:
  """Deletes the staging directories of `out` that runs killed on this host left behind."""
  removed = []
  for staging in sorted(out.parent.glob(f".{out.name}{PARTIAL_INFIX}*")):
    try:
      owner = json.loads((staging / OWNER_FILE).read_text())
    except (OSError, ValueError):
      owner = {"host": socket.gethostname()}  # killed before it could say whose it is
    if isinstance(owner, dict) and not _running_here(owner):
      shutil.rmtree(staging, ignore_errors=True)
      removed.append(staging)
  return removed


@contextlib.contextmanager
def staged(out: str | pathlib.Path) -> Iterator[pathlib.Path]:
  """Yields a fresh temporary directory next to `out`; renames it to `out` if the block succeeds,
  deletes it if the block raises (or is interrupted). `out` must not exist. Staging directories
  that killed runs left for `out` are removed first, and said so on stderr."""
  out = pathlib.Path(out)
  if out.exists():
    raise FileExistsError(f"{out} already exists; choose a new output directory")
  out.parent.mkdir(parents=True, exist_ok=True)
  for stale in remove_stale_partials(out):
    print(f"removed {stale}, left by an interrupted run", file=sys.stderr)
  staging = make_temporary_directory(out.parent, f".{out.name}{PARTIAL_INFIX}")
  try:
    (staging / OWNER_FILE).write_text(json.dumps({"host": socket.gethostname(), "pid": os.getpid()}))
    yield staging
    (staging / OWNER_FILE).unlink()
    staging.rename(out)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise


def write_json(path: pathlib.Path, value: Any) -> None:
  path.write_text(json.dumps(value, indent=2, sort_keys=False) + "\n")

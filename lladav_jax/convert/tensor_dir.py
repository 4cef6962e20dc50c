"""The tensors of a checkpoint directory (or of one weights file), in either format we read.

Which files hold the weights, in this order (as transformers chooses):

  model.safetensors.index.json   the safetensors shards it lists
  pytorch_model.bin.index.json   the PyTorch shards it lists
  *.safetensors                  every such file
  pytorch_model*.bin             PyTorch files (training_args.bin, optimizer.bin, ... are not weights)

A path to one file reads that file (`.safetensors`, else a `torch.save` zip: `.bin`, `.pt`, `.pth`).
Every conversion reads through this one interface; the formats differ only in the per-file reader
(safetensors_stream.SafetensorsFile, torch_zip.TorchZipFile).
"""

import dataclasses
import json
import pathlib

import numpy as np

from lladav_jax.convert.dtypes import DTYPES
from lladav_jax.convert.safetensors_stream import INDEX_FILE as SAFETENSORS_INDEX
from lladav_jax.convert.safetensors_stream import SafetensorsFile
from lladav_jax.convert.torch_zip import TorchZipFile

TORCH_INDEX = "pytorch_model.bin.index.json"
TORCH_WEIGHTS = "pytorch_model*.bin"


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  key: str
  file: pathlib.Path
  shape: tuple[int, ...]
  dtype: str  # safetensors name, e.g. "BF16", whatever the file's format

  @property
  def nbytes(self) -> int:
    itemsize = DTYPES[self.dtype].itemsize if self.dtype in DTYPES else 0
    return int(np.prod(self.shape, dtype=np.int64)) * itemsize


def open_file(file: pathlib.Path) -> SafetensorsFile | TorchZipFile:
  """The reader of one weights file, by its name; raises ValueError naming the file."""
  return SafetensorsFile(file) if file.suffix == ".safetensors" else TorchZipFile(file)


class TensorDir:
  """The tensors of a checkpoint directory (see the module docstring for which files), or of one file.

  Nothing is raised while opening: unreadable, truncated or refused files and disagreements between
  the index and the files are collected in `problems` (each naming the file and key), so that
  callers can report them together with their own findings. Keys that the index assigns to an
  unreadable file are in `unreadable_keys`.
  """

  def __init__(self, path: str | pathlib.Path):
    path = pathlib.Path(path)
    self.directory = path.parent if path.is_file() else path
    self.tensors: dict[str, TensorInfo] = {}
    self.problems: list[str] = []
    self.unreadable_keys: set[str] = set()
    self.files: list[pathlib.Path] = []
    self._readers: dict[pathlib.Path, SafetensorsFile | TorchZipFile] = {}
    if path.is_file():
      self._open_file(path, expected_keys=None, index=None)
      return
    if not path.is_dir():
      self.problems.append(f"{path}: neither a directory nor a file")
      return
    for name in (SAFETENSORS_INDEX, TORCH_INDEX):
      if (path / name).exists():
        self._open_index(path / name)
        return
    files = sorted(path.glob("*.safetensors")) or sorted(path.glob(TORCH_WEIGHTS))
    if not files:
      others = sorted(p.name for p in path.glob("*.bin"))
      hint = f" (its {', '.join(others)} are not read as weights)" if others else ""
      self.problems.append(f"{path}: no weights: none of {SAFETENSORS_INDEX}, {TORCH_INDEX}, *.safetensors, "
                           f"{TORCH_WEIGHTS}{hint}")
    for file in files:
      self._open_file(file, expected_keys=None, index=None)

  def _open_index(self, index: pathlib.Path) -> None:
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
      if not isinstance(weight_map, dict):
        raise TypeError(f"weight_map is a {type(weight_map).__name__}")
    except (ValueError, KeyError, TypeError) as e:
      self.problems.append(f"{index}: not a checkpoint index with a weight_map ({e})")
      return
    by_file: dict[str, list[str]] = {}
    for key, name in weight_map.items():
      by_file.setdefault(name, []).append(key)
    for name, keys in sorted(by_file.items()):
      file = self.directory / name
      if not file.exists():
        self.problems.append(f"{file}: listed in {index.name} (for {len(keys)} tensors, e.g. {keys[0]}) "
                             "but missing")
        self.unreadable_keys.update(keys)
        continue
      self._open_file(file, expected_keys=set(keys), index=index.name)

  def _open_file(self, file: pathlib.Path, expected_keys: set[str] | None, index: str | None) -> None:
    self.files.append(file)
    try:
      reader = open_file(file)
    except ValueError as e:  # each reader's error names the file and the cause
      self.problems.append(str(e))
      self.unreadable_keys.update(expected_keys or ())
      return
    self._readers[file] = reader
    for key, stored in reader.tensors.items():
      if key in self.tensors:
        self.problems.append(f"{key}: stored twice, in {self.tensors[key].file.name} and {file.name}")
        continue
      if expected_keys is not None and key not in expected_keys:
        self.problems.append(f"{key}: in {file.name} but not listed for it in {index}")
        continue
      self.tensors[key] = TensorInfo(key, file, tuple(stored.shape), stored.dtype)
    if expected_keys is not None:
      for key in sorted(expected_keys - set(reader.tensors)):
        self.problems.append(f"{key}: listed in {index} for {file.name}, which does not hold it")

  @property
  def nbytes(self) -> int:
    return sum(info.nbytes for info in self.tensors.values())

  def read(self, key: str) -> np.ndarray:
    """One whole tensor, as stored (bfloat16 stays bfloat16)."""
    return self._readers[self.tensors[key].file].read(key)

  def read_slice(self, key: str, index: tuple) -> np.ndarray:
    """Part of a tensor (`index` is a tuple of slices); only about that part is read from the file."""
    return self._readers[self.tensors[key].file].read_slice(key, index)

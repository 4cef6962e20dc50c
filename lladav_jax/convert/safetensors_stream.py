"""Safetensors checkpoints read and written one tensor at a time (no torch).

Reading goes through safetensors' numpy API: each read opens the file, copies one tensor (or one
slice of it) out of the memory map and closes it again, so no mapped pages outlive the read and
the resident memory stays at about one tensor. Writing streams tensors into pre-planned shards
(header first, then each tensor's bytes as it arrives), so an export never holds a whole shard.
"""

import dataclasses
import json
import pathlib
import re
import sys
from typing import Iterable

import ml_dtypes
import numpy as np
from safetensors import safe_open

INDEX_FILE = "model.safetensors.index.json"

# safetensors dtype names -> numpy dtypes (bfloat16 and float8 come from ml_dtypes).
DTYPES = {
    "BF16": np.dtype(ml_dtypes.bfloat16), "F16": np.dtype(np.float16), "F32": np.dtype(np.float32),
    "F64": np.dtype(np.float64), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2), "I8": np.dtype(np.int8), "U8": np.dtype(np.uint8),
    "I16": np.dtype(np.int16), "U16": np.dtype(np.uint16), "I32": np.dtype(np.int32),
    "U32": np.dtype(np.uint32), "I64": np.dtype(np.int64), "U64": np.dtype(np.uint64),
    "BOOL": np.dtype(np.bool_),
}
DTYPE_NAMES = {v: k for k, v in DTYPES.items()}
# Weights are floating point; anything else (quantised, integer) cannot become a parameter.
WEIGHT_DTYPES = ("BF16", "F16", "F32", "F64")


def dtype_name(dtype) -> str:
  dtype = np.dtype(dtype)
  if dtype not in DTYPE_NAMES:
    raise ValueError(f"dtype {dtype} has no safetensors name")
  return DTYPE_NAMES[dtype]


@dataclasses.dataclass(frozen=True)
class TensorInfo:
  key: str
  file: pathlib.Path
  shape: tuple[int, ...]
  dtype: str  # safetensors name, e.g. "BF16"

  @property
  def nbytes(self) -> int:
    itemsize = DTYPES[self.dtype].itemsize if self.dtype in DTYPES else 0
    return int(np.prod(self.shape, dtype=np.int64)) * itemsize


class SafetensorsDir:
  """The tensors of a checkpoint directory: `model.safetensors`, or the shards that
  `model.safetensors.index.json` lists, or else every `*.safetensors` file in it.

  Nothing is raised while opening: unreadable or truncated files and disagreements between the
  index and the files are collected in `problems` (each naming the file and key), so that callers
  can report them together with their own findings. Keys that the index assigns to an unreadable
  file are in `unreadable_keys`.
  """

  def __init__(self, directory: str | pathlib.Path):
    self.directory = pathlib.Path(directory)
    self.tensors: dict[str, TensorInfo] = {}
    self.problems: list[str] = []
    self.unreadable_keys: set[str] = set()
    self.files: list[pathlib.Path] = []
    if not self.directory.is_dir():
      self.problems.append(f"{self.directory}: not a directory")
      return
    index = self.directory / INDEX_FILE
    if index.exists():
      self._open_index(index)
    else:
      files = sorted(self.directory.glob("*.safetensors"))
      if not files:
        self.problems.append(f"{self.directory}: no {INDEX_FILE} and no *.safetensors file")
      for file in files:
        self._open_file(file, expected_keys=None)

  def _open_index(self, index: pathlib.Path) -> None:
    try:
      weight_map = json.loads(index.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
      self.problems.append(f"{index}: not a safetensors index with a weight_map ({e})")
      return
    by_file: dict[str, list[str]] = {}
    for key, name in weight_map.items():
      by_file.setdefault(name, []).append(key)
    for name, keys in sorted(by_file.items()):
      file = self.directory / name
      if not file.exists():
        self.problems.append(f"{file}: listed in {INDEX_FILE} (for {len(keys)} tensors, e.g. {keys[0]}) "
                             "but missing")
        self.unreadable_keys.update(keys)
        continue
      self._open_file(file, expected_keys=set(keys))

  def _open_file(self, file: pathlib.Path, expected_keys: set[str] | None) -> None:
    self.files.append(file)
    try:
      with safe_open(file, framework="numpy") as f:
        infos = []
        for key in f.keys():
          piece = f.get_slice(key)
          infos.append(TensorInfo(key, file, tuple(int(d) for d in piece.get_shape()), piece.get_dtype()))
    except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
      self.problems.append(f"{file}: unreadable ({e})")
      self.unreadable_keys.update(expected_keys or ())
      return
    for info in infos:
      if info.key in self.tensors:
        self.problems.append(f"{info.key}: stored twice, in {self.tensors[info.key].file.name} and {file.name}")
        continue
      if expected_keys is not None and info.key not in expected_keys:
        self.problems.append(f"{info.key}: in {file.name} but not listed for it in {INDEX_FILE}")
        continue
      self.tensors[info.key] = info
    if expected_keys is not None:
      for key in sorted(expected_keys - {i.key for i in infos}):
        self.problems.append(f"{key}: listed in {INDEX_FILE} for {file.name}, which does not hold it")

  @property
  def nbytes(self) -> int:
    return sum(info.nbytes for info in self.tensors.values())

  def read(self, key: str) -> np.ndarray:
    """One whole tensor, as stored (bfloat16 stays bfloat16)."""
    info = self.tensors[key]
    with safe_open(info.file, framework="numpy") as f:
      return f.get_tensor(key)

  def read_slice(self, key: str, index: tuple) -> np.ndarray:
    """Part of a tensor (`index` is a tuple of slices); only that part is copied out of the file."""
    info = self.tensors[key]
    with safe_open(info.file, framework="numpy") as f:
      return f.get_slice(key)[index]


def parse_size(text: str) -> int:
  """'5GB', '500MB', '1.5GiB' or a byte count -> bytes."""
  match = re.fullmatch(r"\s*([\d.]+)\s*([KMGT]?)(i?)B?\s*", str(text), re.IGNORECASE)
  if not match:
    raise ValueError(f"size {text!r}: expected e.g. '5GB', '500MB' or a number of bytes")
  number, unit, binary = match.groups()
  base = 1024 if binary else 1000
  return int(float(number) * base ** "_KMGT".index(unit.upper() or "_"))


def group_into_shards(specs: list[tuple[str, tuple[int, ...], str]], max_shard_bytes: int) -> list[list[int]]:
  """Groups tensors (in order) into shards of at most `max_shard_bytes` (a bigger tensor gets its own)."""
  shards: list[list[int]] = [[]]
  size = 0
  for i, (_, shape, dtype) in enumerate(specs):
    nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
    if shards[-1] and size + nbytes > max_shard_bytes:
      shards.append([])
      size = 0
    shards[-1].append(i)
    size += nbytes
  return shards


def _header(specs: list[tuple[str, tuple[int, ...], str]], metadata: dict[str, str]) -> bytes:
  header: dict = {"__metadata__": metadata}
  offset = 0
  for key, shape, dtype in specs:
    nbytes = int(np.prod(shape, dtype=np.int64)) * DTYPES[dtype].itemsize
    header[key] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
    offset += nbytes
  text = json.dumps(header, separators=(",", ":")).encode()
  text += b" " * (-len(text) % 8)  # the data that follows starts 8-byte aligned
  return len(text).to_bytes(8, "little") + text


def write_shards(directory: pathlib.Path, specs: list[tuple[str, tuple[int, ...], str]],
                 tensors: Iterable[tuple[str, np.ndarray]], max_shard_bytes: int,
                 metadata: dict[str, str] | None = None) -> dict:
  """Writes `tensors` (yielded in the order of `specs`: (key, shape, safetensors dtype)) into
  model-0000i-of-0000N.safetensors files plus model.safetensors.index.json. Returns the index."""
  if sys.byteorder != "little":
    raise NotImplementedError("safetensors files are little-endian; this host is not")
  metadata = {"format": "pt"} if metadata is None else metadata
  shards = group_into_shards(specs, max_shard_bytes)
  names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
  weight_map, total = {}, 0
  stream = iter(tensors)
  for name, members in zip(names, shards):
    shard_specs = [specs[i] for i in members]
    with open(directory / name, "wb") as f:
      f.write(_header(shard_specs, metadata))
      for key, shape, dtype in shard_specs:
        got_key, array = next(stream)
        array = np.ascontiguousarray(array)
        if got_key != key or array.shape != tuple(shape) or dtype_name(array.dtype) != dtype:
          raise ValueError(f"tensor stream out of plan: expected {key} {dtype}{list(shape)}, got "
                           f"{got_key} {array.dtype}{list(array.shape)}")
        f.write(array.reshape(-1).view(np.uint8).data)
        weight_map[key] = name
        total += array.nbytes
  if next(stream, None) is not None:
    raise ValueError("tensor stream has more tensors than planned")
  index = {"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}
  (directory / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
  return index

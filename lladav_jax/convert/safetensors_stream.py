"""Safetensors files read and written one tensor at a time (no torch).

Reading (one file; tensor_dir.TensorDir reads a directory of them) goes through safetensors' numpy
API: each read opens the file, copies one tensor (or one slice of it) out of the memory map and
closes it again, so no mapped pages outlive the read and the resident memory stays at about one
tensor. Writing streams tensors into pre-planned shards
(header first, then each tensor's bytes as it arrives), so an export never holds a whole shard.
"""

import json
import pathlib
import re
import sys
from typing import Iterable, NamedTuple

import numpy as np
from safetensors import safe_open

from lladav_jax.convert.dtypes import DTYPES, dtype_name

INDEX_FILE = "model.safetensors.index.json"


class Stored(NamedTuple):
  shape: tuple[int, ...]
  dtype: str  # safetensors name


class SafetensorsFile:
  """The tensors of one .safetensors file (the same interface as torch_zip.TorchZipFile):
  `tensors` {key: .shape and .dtype (safetensors name)}, `read(key)`, `read_slice(key, index)`. Opening reads the
  header only and raises ValueError naming the file when it is unreadable or truncated."""

  def __init__(self, file: str | pathlib.Path):
    self.file = pathlib.Path(file)
    self.tensors: dict[str, Stored] = {}
    try:
      with safe_open(self.file, framework="numpy") as f:
        for key in f.keys():
          piece = f.get_slice(key)
          self.tensors[key] = Stored(tuple(int(d) for d in piece.get_shape()), piece.get_dtype())
    except Exception as e:  # safetensors raises its own error type for truncated or corrupt files
      raise ValueError(f"{self.file}: unreadable ({e})") from e

  def read(self, key: str) -> np.ndarray:
    with safe_open(self.file, framework="numpy") as f:
      return f.get_tensor(key)

  def read_slice(self, key: str, index: tuple) -> np.ndarray:
    with safe_open(self.file, framework="numpy") as f:
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

"""A conversion plan: every parameter leaf of the model, where its values come from, validated
against the model's own parameter shapes before anything is read or written.

The expected shapes come from tracing `LLaDAV.init` abstractly for the config, so the checkpoint
is checked against the module that will use it. All problems (missing, unexpected, mis-shaped or
non-float tensors, unreadable files) are collected and raised together as one ConversionError.
"""

import dataclasses
from typing import Callable

import flax.linen as nn
import numpy as np
from flax import traverse_util

from lladav_jax.convert import key_map
from lladav_jax.convert.layouts import Part
from lladav_jax.convert.problems import ConversionError
from lladav_jax.convert.dtypes import DTYPES, WEIGHT_DTYPES
from lladav_jax.convert.tensor_dir import TensorDir
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lladav import LLaDAV, abstract_params

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Leaf:
  """One parameter array of the model and how to produce it (on demand, one leaf at a time)."""

  path: Path
  shape: tuple[int, ...]
  dtype: np.dtype
  source: str  # where the values come from, for the mapping table
  load: Callable[[], np.ndarray]
  num_source_tensors: int = 0
  transform: str = ""  # key_map transform applied to each source tensor
  # Reads part of the leaf (a tuple of slices over `shape`); None when only whole reads exist.
  load_slice: Callable[[tuple], np.ndarray] | None = None

  @property
  def name(self) -> str:
    return "/".join(self.path)

  @property
  def nbytes(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclasses.dataclass
class ConversionPlan:
  leaves: list[Leaf]
  skipped: dict[str, list[str]]  # reason -> source keys not converted
  notes: list[str]
  source_bytes: int = 0  # bytes of the source tensors that are read

  @property
  def nbytes(self) -> int:
    return sum(leaf.nbytes for leaf in self.leaves)


def model_shapes(config: LLaDAVConfig, scan: bool) -> dict[Path, tuple[int, ...]]:
  """Every parameter path of LLaDAV(config) and its shape (stacked `layers` when `scan`)."""
  flat = traverse_util.flatten_dict(nn.unbox(abstract_params(LLaDAV(config, ComputeConfig(scan_layers=scan)))))
  return {tuple(path): tuple(value.shape) for path, value in flat.items()}


def describe_keys(keys: tuple[str, ...]) -> str:
  """'model.layers.{0..31}.mlp.up_proj.weight' for a stack of per-layer keys."""
  if len(keys) == 1:
    return keys[0]
  first, last = keys[0].split("."), keys[-1].split(".")
  if len(first) == len(last):
    differ = [i for i, (a, b) in enumerate(zip(first, last)) if a != b]
    if len(differ) == 1 and first[differ[0]].isdigit():
      first[differ[0]] = f"{{{first[differ[0]]}..{last[differ[0]]}}}"
      return ".".join(first)
  return f"{keys[0]} ... {keys[-1]}"


def _position_hint(key: str, got: tuple[int, ...], want: tuple[int, ...]) -> str:
  if not key.endswith("position_embedding.weight") or len(got) != 2:
    return ""
  side = int(round(want[0] ** 0.5))
  return (f"; a {side}x{side} patch grid has {want[0]} positions (SigLIP has no class token, so "
          f"{want[0] + 1} would come from another model), and width {want[1]}")


def _read_slice(entry: key_map.Entry, reader: TensorDir, index: tuple, dtype) -> np.ndarray:
  """The part `index` of an entry's leaf, reading only that part of each HF tensor."""
  def read(key, layer_index):
    value = key_map.TO_FLAX[entry.transform](reader.read_slice(key, key_map.hf_index(entry.transform, layer_index)))
    return value if dtype is None else value.astype(dtype, copy=False)

  if not entry.stacked:
    return read(entry.hf_keys[0], index)
  layers = range(*index[0].indices(len(entry.hf_keys)))
  return np.stack([read(entry.hf_keys[i], index[1:]) for i in layers])


def plan_part(part: Part, shapes: dict[Path, tuple[int, ...]], dtype, problems: list[str],
              skipped: dict[str, list[str]], notes: list[str]) -> list[Leaf]:
  """Leaves for one checkpoint directory; problems, skipped keys and notes are appended to."""
  reader = part.reader
  problems.extend(reader.problems)
  leaves, used = [], set()
  for entry in part.entries:
    used.update(entry.hf_keys)
    if entry.path not in shapes:
      problems.append(f"{'/'.join(entry.path)}: mapped from {entry.hf_keys[0]} but not a parameter of the model")
      continue
    flax_shape = shapes[entry.path]
    want = key_map.hf_shape(entry.transform, flax_shape[1:] if entry.stacked else flax_shape)
    present = [reader.tensors[k] for k in entry.hf_keys if k in reader.tensors]
    missing = [k for k in entry.hf_keys if k not in reader.tensors and k not in reader.unreadable_keys]
    if not present and entry.path in part.optional and not reader.unreadable_keys:
      notes.append(f"{'/'.join(entry.path)}: not in the {part.name} checkpoint; zeros "
                   f"({part.optional[entry.path]})")
      leaves.append(Leaf(entry.path, flax_shape, np.dtype(dtype or np.float32), "zeros (absent from source)",
                         lambda s=flax_shape, d=dtype: np.zeros(s, d or np.float32)))
      continue
    problems.extend(f"{k}: missing from the {part.name} checkpoint (needed for {'/'.join(entry.path)})"
                    for k in missing)
    for info in present:
      if info.shape != want:
        problems.append(f"{info.key}: shape {list(info.shape)} in {info.file.name}, but the config implies "
                        f"{list(want)}{_position_hint(info.key, info.shape, want)}")
      if info.dtype not in WEIGHT_DTYPES:
        problems.append(f"{info.key}: dtype {info.dtype} in {info.file.name} is not a floating-point weight "
                        f"(expected one of {', '.join(WEIGHT_DTYPES)}; quantised checkpoints are not supported)")
    stored = sorted({info.dtype for info in present})
    if dtype is None and len(stored) > 1:
      problems.append(f"{describe_keys(entry.hf_keys)}: the layers mix dtypes {stored}; cast them to one "
                      "(--dtype, or dtype= when loading)")
    if len(present) != len(entry.hf_keys) or not stored or stored[0] not in DTYPES:
      continue
    leaves.append(Leaf(
        entry.path, flax_shape, np.dtype(dtype or DTYPES[stored[0]]), describe_keys(entry.hf_keys),
        lambda e=entry: key_map.read_entry(e, reader.read, dtype), len(entry.hf_keys), entry.transform,
        lambda index, e=entry: _read_slice(e, reader, index, dtype)))
  for key in sorted(set(reader.tensors) - used):
    reason = part.skip_reason(key)
    if reason is None:
      problems.append(f"{key}: unexpected in the {part.name} checkpoint ({reader.tensors[key].file.name}); "
                      "no parameter takes it")
    else:
      skipped.setdefault(reason, []).append(key)
  return leaves


def check_coverage(leaves: list[Leaf], shapes: dict[Path, tuple[int, ...]], problems: list[str]) -> None:
  """Every model parameter comes from exactly one place, with the model's shape."""
  seen: dict[Path, Leaf] = {}
  for leaf in leaves:
    if leaf.path in seen:
      problems.append(f"{leaf.name}: provided twice ({seen[leaf.path].source}; {leaf.source})")
    seen[leaf.path] = leaf
  for path, shape in shapes.items():
    if path not in seen and not problems:  # after other problems a gap is their consequence
      problems.append(f"{'/'.join(path)}: no source provides this parameter")


def stored_tree_problems(stored: dict[Path, tuple], shapes: dict[Path, tuple[int, ...]]) -> list[str]:
  """Differences between a converted checkpoint's {path: (shape, dtype)} and the model's shapes."""
  problems = [f"{'/'.join(p)}: in the checkpoint but not a parameter of the model" for p in stored if p not in shapes]
  problems += [f"{'/'.join(p)}: missing from the checkpoint" for p in shapes if p not in stored]
  problems += [f"{'/'.join(p)}: shape {list(stored[p][0])} in the checkpoint, the config implies {list(s)}"
               for p, s in shapes.items() if p in stored and tuple(stored[p][0]) != tuple(s)]
  return problems


def build_conversion_plan(what: str, parts: list[Part], shapes: dict[Path, tuple[int, ...]], dtype=None,
                            extra_leaves: list[Leaf] = (), notes: list[str] = ()) -> ConversionPlan:
  """Validates every part against the model shapes; raises ConversionError listing all problems."""
  problems: list[str] = []
  skipped: dict[str, list[str]] = {}
  notes = list(notes)
  leaves = []
  for part in parts:
    leaves += plan_part(part, shapes, dtype, problems, skipped, notes)
  leaves += list(extra_leaves)
  check_coverage(leaves, shapes, problems)
  if problems:
    raise ConversionError(what, problems)
  order = {path: i for i, path in enumerate(shapes)}
  leaves.sort(key=lambda leaf: order[leaf.path])
  source_bytes = sum(part.reader.tensors[k].nbytes for part in parts for e in part.entries for k in e.hf_keys
                     if k in part.reader.tensors)
  return ConversionPlan(leaves, skipped, notes, source_bytes)

"""`load_pretrained(path)`: LLaDA-V weights from a converted checkpoint, a Hugging Face directory or a
training workdir.

    config, params = load_pretrained("ckpt/lladav-8b", mesh=mesh, rules=rules)
    logits = LLaDAV(config, compute).apply({"params": params}, **inputs)

`path` is a checkpoint written by `python -m tools.convert_weights` (see docs/convert.md), a
LLaDA-V (`llava_llada`) Hugging Face directory, converted on the fly, or a training workdir
(`python -m lladav_jax.train`: its latest checkpoint's params). With a mesh, every array
is created directly in the sharding that the model's logical axis names and `rules` give it, and
each process reads only the parts its devices hold (orbax chunks, or slices of the safetensors or
PyTorch .bin tensors). Without one, arrays land on the first local device.
"""

import pathlib
from typing import Any, NamedTuple, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, SingleDeviceSharding

from lladav_jax import sharding
from lladav_jax.checkpoints import workdir
from lladav_jax.convert import checkpoint_dir, layouts, orbax_io
from lladav_jax.convert.conversion_plan import build_conversion_plan, stored_tree_problems
from lladav_jax.convert.problems import ConversionError
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.models import ComputeConfig, LLaDAV
from lladav_jax.models.lladav import abstract_params

Path = tuple[str, ...]


class CheckpointError(ValueError):
  """A directory that holds nothing `load_pretrained` reads, or one stored for another layout."""


class Pretrained(NamedTuple):
  config: LLaDAVConfig
  params: dict[str, Any]  # the "params" collection, unboxed arrays


def param_shardings(config: LLaDAVConfig, scan_layers: bool, mesh: Mesh | None,
                    rules: Sequence | None = None) -> dict[Path, jax.ShapeDtypeStruct]:
  """{path: ShapeDtypeStruct(shape, param dtype, sharding)} for every parameter of LLaDAV(config)."""
  abstract = abstract_params(LLaDAV(config, ComputeConfig(scan_layers=scan_layers)))
  if mesh is None:
    device = SingleDeviceSharding(jax.local_devices()[0])
    shardings = jax.tree.map(lambda _: device, nn.unbox(abstract))
  else:
    rules = sharding.DEFAULT_LOGICAL_AXIS_RULES if rules is None else rules
    shardings = sharding.logical_shardings(nn.get_partition_spec(abstract), mesh, rules)
  shapes = traverse_util.flatten_dict(nn.unbox(abstract))
  flat_shardings = traverse_util.flatten_dict(shardings)
  return {tuple(p): jax.ShapeDtypeStruct(v.shape, v.dtype, sharding=flat_shardings[p]) for p, v in shapes.items()}


def _load_converted(path: pathlib.Path, scan_layers: bool, dtype, mesh, rules) -> Pretrained:
  info = checkpoint_dir.read_info(path)
  if bool(info["scan_layers"]) != scan_layers:
    raise CheckpointError(f"{path} was converted with scan_layers={info['scan_layers']}; load it with "
                     f"scan_layers={info['scan_layers']} (and build the model with that ComputeConfig), or "
                     "convert again with the other layout")
  config = LLaDAVConfig.from_hf_config(layouts.read_config(path))
  targets = param_shardings(config, scan_layers, mesh, rules)
  stored = orbax_io.metadata(path / checkpoint_dir.PARAMS_DIR)
  problems = stored_tree_problems(stored, {p: t.shape for p, t in targets.items()})
  if problems:
    raise ConversionError(f"{path}: the checkpoint does not fit its config.json", problems)
  targets = {p: jax.ShapeDtypeStruct(t.shape, dtype or stored[p][1], sharding=t.sharding) for p, t in targets.items()}
  params = orbax_io.restore(path / checkpoint_dir.PARAMS_DIR, targets)
  return Pretrained(config, traverse_util.unflatten_dict(params))


def _load_hf(path: pathlib.Path, scan_layers: bool, dtype, mesh, rules, vision_config) -> Pretrained:
  config, _ = layouts.lladav_config(path, vision_config)
  targets = param_shardings(config, scan_layers, mesh, rules)
  conversion = build_conversion_plan(f"load {path}", [layouts.lladav_part(path, config, scan=scan_layers)],
                                     {p: t.shape for p, t in targets.items()}, dtype)
  params = {}
  for leaf in conversion.leaves:
    target = targets[leaf.path]
    if mesh is None or leaf.load_slice is None:
      params[leaf.path] = jax.device_put(leaf.load(), target.sharding)
      continue
    cache: dict = {}  # devices holding the same part (replicas) read it once

    def read(index, leaf=leaf, cache=cache):
      key = tuple((s.start, s.stop, s.step) for s in index)
      if key not in cache:
        cache[key] = np.ascontiguousarray(leaf.load_slice(index))
      return cache[key]
    params[leaf.path] = jax.make_array_from_callback(leaf.shape, target.sharding, read)
  return Pretrained(config, traverse_util.unflatten_dict(params))


def _load_workdir(path: pathlib.Path, scan_layers: bool, dtype, mesh, rules) -> Pretrained:
  """The latest params of a training workdir (`python -m lladav_jax.train`)."""
  config, stored_scan = workdir.read_description(str(path))
  if stored_scan != scan_layers:
    raise CheckpointError(f"{path} was trained with scan_layers={stored_scan}; load it with that layout")
  targets = param_shardings(config, scan_layers, mesh, rules)
  targets = {p: jax.ShapeDtypeStruct(t.shape, dtype or t.dtype, sharding=t.sharding) for p, t in targets.items()}
  return Pretrained(config, workdir.read_params(str(path), traverse_util.unflatten_dict(targets)))


def load_pretrained(path: str | pathlib.Path, *, scan_layers: bool = True, dtype=None, mesh: Mesh | None = None,
                    rules: Sequence | None = None, vision_config: dict | None = None) -> Pretrained:
  """Loads (config, params) from a converted checkpoint, a LLaDA-V Hugging Face directory or a
  training workdir.

  Args:
    path: the directory.
    scan_layers: the layer layout of the model that will use the params (ComputeConfig.scan_layers).
    dtype: cast every parameter to this dtype while reading (default: as stored).
    mesh, rules: create each array in the sharding its logical axis names map to under `rules`
      (default: sharding.DEFAULT_LOGICAL_AXIS_RULES); each process reads only its devices' parts.
    vision_config: the vision tower's config.json contents, for a Hugging Face directory whose
      mm_vision_tower is neither local nor a known tower.
  """
  path = pathlib.Path(path).expanduser().absolute()
  dtype = None if dtype is None else jnp.dtype(dtype)
  kind = _kind(path)
  if kind == WORKDIR:
    return _load_workdir(path, scan_layers, dtype, mesh, rules)
  if kind == CONVERTED:
    return _load_converted(path, scan_layers, dtype, mesh, rules)
  return _load_hf(path, scan_layers, dtype, mesh, rules, vision_config)


def load_config(path: str | pathlib.Path, *, vision_config: dict | None = None) -> LLaDAVConfig:
  """The model config `load_pretrained(path)` would return, without reading any weights (so that
  settings can be checked against it first)."""
  path = pathlib.Path(path).expanduser().absolute()
  kind = _kind(path)
  if kind == WORKDIR:
    return workdir.read_description(str(path))[0]
  if kind == CONVERTED:
    checkpoint_dir.read_info(path)
    return LLaDAVConfig.from_hf_config(layouts.read_config(path))
  return layouts.lladav_config(path, vision_config)[0]


WORKDIR, CONVERTED, HUGGING_FACE = "training workdir", "converted checkpoint", "Hugging Face directory"


def _kind(path: pathlib.Path) -> str:
  if workdir.is_workdir(str(path)):
    return WORKDIR
  if checkpoint_dir.is_checkpoint(path) or (path / checkpoint_dir.PARAMS_DIR).exists():
    return CONVERTED
  if (path / layouts.CONFIG_FILE).is_file():
    return HUGGING_FACE
  if not path.is_dir():
    raise CheckpointError(f"{path}: no such directory")
  if workdir.has_checkpoints(str(path)):
    raise CheckpointError(f"{path}: a training workdir without {workdir.INFO_FILE} (written when training starts)")
  raise CheckpointError(f"{path}: neither a converted checkpoint ({checkpoint_dir.INFO_FILE}) nor a Hugging Face "
                        f"directory ({layouts.CONFIG_FILE} + *.safetensors or pytorch_model*.bin) nor a training "
                        "workdir")

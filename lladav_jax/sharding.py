"""Logical axis names, the rules that map them onto the (data, fsdp, tensor) mesh, and mesh helpers.

Every parameter and the main activations carry logical names (see `models/`); the rules, which live
in the run config, decide how each name is laid out on the device mesh.
"""

from typing import Any, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

# Mesh axes.
DATA = "data"
FSDP = "fsdp"
TENSOR = "tensor"
MESH_AXES = (DATA, FSDP, TENSOR)

# Parameter axes.
EMBED = "embed"  # model width of the language tower (and of the vision tower)
EMBED_VISION = "embed_vision"  # vision width where it meets the language width in one matrix
MLP = "mlp"
HEADS = "heads"  # query heads x head_dim, flattened
KV_HEADS = "kv_heads"  # key/value heads x head_dim, flattened
VOCAB = "vocab"
LAYERS = "layers"  # stacked layer axis when scanning
NORM = "norm"
POSITIONS = "positions"  # learned position table of the vision tower

# Activation axes.
ACT_BATCH = "activation_batch"
ACT_LENGTH = "activation_length"
ACT_EMBED = "activation_embed"
ACT_HEADS = "activation_heads"
ACT_KV = "activation_kv"  # head_dim
ACT_MLP = "activation_mlp"
ACT_VOCAB = "activation_vocab"

# Default rules: batch over (data, fsdp); weights fully sharded over fsdp and megatron-style over
# tensor. Each entry is (logical name, mesh axis or axes or None).
DEFAULT_LOGICAL_AXIS_RULES: tuple[tuple[str, Any], ...] = (
    (ACT_BATCH, (DATA, FSDP)),
    (ACT_LENGTH, None),
    (ACT_EMBED, None),
    (ACT_HEADS, TENSOR),
    (ACT_KV, None),
    (ACT_MLP, TENSOR),
    (ACT_VOCAB, TENSOR),
    (EMBED, FSDP),
    (EMBED_VISION, FSDP),
    (MLP, TENSOR),
    (HEADS, TENSOR),
    (KV_HEADS, TENSOR),
    (VOCAB, TENSOR),
    (LAYERS, None),
    (NORM, None),
    (POSITIONS, None),
)


def normalize_rules(rules: Sequence[Sequence[Any]]) -> tuple[tuple[str, Any], ...]:
  """Turns rules from a config (lists) into the hashable tuples flax expects, checking names."""
  out = []
  for rule in rules:
    if len(rule) != 2:
      raise ValueError(f"logical axis rule {rule!r} is not a (logical, mesh) pair")
    logical, mesh_axes = rule
    axes = mesh_axes if isinstance(mesh_axes, (list, tuple)) else (mesh_axes,)
    for axis in axes:
      if axis is not None and axis not in MESH_AXES:
        raise ValueError(f"logical axis rule {rule!r} names unknown mesh axis {axis!r}; "
                         f"mesh axes are {MESH_AXES}")
    if isinstance(mesh_axes, list):
      mesh_axes = tuple(mesh_axes)
    out.append((str(logical), mesh_axes))
  return tuple(out)


def create_mesh(axis_sizes: dict[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
  """Builds a (data, fsdp, tensor) mesh; one size may be -1 to take the remaining devices."""
  devices = list(jax.devices() if devices is None else devices)
  unknown = set(axis_sizes) - set(MESH_AXES)
  if unknown:
    raise ValueError(f"unknown mesh axes {sorted(unknown)}; expected a subset of {MESH_AXES}")
  sizes = [int(axis_sizes.get(axis, 1)) for axis in MESH_AXES]
  if sizes.count(-1) > 1:
    raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
  known = int(np.prod([s for s in sizes if s != -1]))
  if -1 in sizes:
    if len(devices) % known:
      raise ValueError(f"{len(devices)} devices cannot be split into mesh {dict(zip(MESH_AXES, sizes))}")
    sizes[sizes.index(-1)] = len(devices) // known
  if int(np.prod(sizes)) != len(devices):
    raise ValueError(f"mesh {dict(zip(MESH_AXES, sizes))} needs {int(np.prod(sizes))} devices, "
                     f"{len(devices)} are available")
  device_grid = mesh_utils.create_device_mesh(sizes, devices=devices, allow_split_physical_axes=True)
  return Mesh(device_grid, MESH_AXES)


def logical_shardings(logical_specs: Any, mesh: Mesh, rules) -> Any:
  """Maps a tree of logical PartitionSpecs (from `nn.get_partition_spec`) to NamedShardings."""
  return nn.logical_to_mesh_sharding(logical_specs, mesh, normalize_rules(rules))


def batch_sharding(mesh: Mesh, ndim: int, rules) -> NamedSharding:
  """Sharding of a batch-leading array: first axis over the batch mesh axes, the rest replicated."""
  spec = nn.logical_to_mesh_axes((ACT_BATCH,) + (None,) * (ndim - 1), normalize_rules(rules))
  return NamedSharding(mesh, PartitionSpec(*spec))


def batch_shards(mesh: Mesh, rules) -> int:
  """Into how many parts `batch_sharding` splits the batch axis (a batch must be a multiple of it)."""
  axes = batch_sharding(mesh, 1, rules).spec[0]
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  return int(np.prod([mesh.shape[a] for a in axes]))


def sharded_fraction(array: jax.Array) -> float:
  """Fraction of the array held by one device (1.0 = fully replicated)."""
  shard_shape = array.sharding.shard_shape(array.shape)
  return float(np.prod(shard_shape)) / float(np.prod(array.shape))

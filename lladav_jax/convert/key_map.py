"""The declarative map between Hugging Face checkpoint keys and lladav_jax parameter paths.

Each `Entry` says: this parameter leaf is built from these HF tensors (one, or one per layer when
layers are scanned and stacked), through this named transform. Both directions use the same table.
"""

import dataclasses
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from lladav_jax.model_config import LLaDAConfig, LLaDAVConfig, ProjectorConfig, SiglipConfig

# HF stores Linear as [out, in] and Conv2d as [out, in, kh, kw]; flax wants [in, out], [kh, kw, in, out].
# Each transform is an axis permutation: flax = hf.transpose(FLAX_AXES[t]), hf = flax.transpose(HF_AXES[t]).
FLAX_AXES: dict[str, tuple[int, ...] | None] = {"identity": None, "linear": (1, 0), "conv": (2, 3, 1, 0)}
HF_AXES: dict[str, tuple[int, ...] | None] = {"identity": None, "linear": (1, 0), "conv": (3, 2, 0, 1)}


def _permute(axes):
  return (lambda x: x) if axes is None else (lambda x: np.transpose(x, axes))


TO_FLAX: dict[str, Callable[[np.ndarray], np.ndarray]] = {t: _permute(a) for t, a in FLAX_AXES.items()}
TO_HF: dict[str, Callable[[np.ndarray], np.ndarray]] = {t: _permute(a) for t, a in HF_AXES.items()}


def flax_shape(transform: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The flax shape of an HF tensor of `shape`."""
  axes = FLAX_AXES[transform]
  return tuple(shape) if axes is None else tuple(shape[a] for a in axes)


def hf_shape(transform: str, shape: Sequence[int]) -> tuple[int, ...]:
  """The HF shape of a flax parameter (one layer of it, when stacked) of `shape`."""
  axes = HF_AXES[transform]
  return tuple(shape) if axes is None else tuple(shape[a] for a in axes)


def hf_index(transform: str, flax_index: tuple) -> tuple:
  """The HF-tensor index (a tuple of slices) that holds `flax_index` of the transformed tensor."""
  axes = FLAX_AXES[transform]
  if axes is None:
    return tuple(flax_index)
  index = [slice(None)] * len(axes)
  for flax_axis, hf_axis in enumerate(axes):
    index[hf_axis] = flax_index[flax_axis]
  return tuple(index)


LLADAV_VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."
LLADAV_TEXT_PREFIX = "model."


@dataclasses.dataclass(frozen=True)
class Entry:
  path: tuple[str, ...]  # parameter path in the flax tree
  hf_keys: tuple[str, ...]  # one key, or one per layer when `stacked`
  transform: str
  stacked: bool = False


# (HF key relative to a layer, flax path relative to the layer, transform)
_LLADA_LAYER = (
    ("input_layernorm.weight", ("input_layernorm", "scale"), "identity"),
    ("post_attention_layernorm.weight", ("post_attention_layernorm", "scale"), "identity"),
    ("self_attn.q_proj.weight", ("self_attn", "q_proj", "kernel"), "linear"),
    ("self_attn.k_proj.weight", ("self_attn", "k_proj", "kernel"), "linear"),
    ("self_attn.v_proj.weight", ("self_attn", "v_proj", "kernel"), "linear"),
    ("self_attn.o_proj.weight", ("self_attn", "o_proj", "kernel"), "linear"),
    ("mlp.gate_proj.weight", ("mlp", "gate_proj", "kernel"), "linear"),
    ("mlp.up_proj.weight", ("mlp", "up_proj", "kernel"), "linear"),
    ("mlp.down_proj.weight", ("mlp", "down_proj", "kernel"), "linear"),
)

# The original LLaDA-8B layout (OLMo-derived names): ff_proj is the gate, ff_out the down projection,
# and the model-level ff_out the LM head.
_LLADA_ORIGINAL_LAYER = (
    ("attn_norm.weight", ("input_layernorm", "scale"), "identity"),
    ("ff_norm.weight", ("post_attention_layernorm", "scale"), "identity"),
    ("q_proj.weight", ("self_attn", "q_proj", "kernel"), "linear"),
    ("k_proj.weight", ("self_attn", "k_proj", "kernel"), "linear"),
    ("v_proj.weight", ("self_attn", "v_proj", "kernel"), "linear"),
    ("attn_out.weight", ("self_attn", "o_proj", "kernel"), "linear"),
    ("ff_proj.weight", ("mlp", "gate_proj", "kernel"), "linear"),
    ("up_proj.weight", ("mlp", "up_proj", "kernel"), "linear"),
    ("ff_out.weight", ("mlp", "down_proj", "kernel"), "linear"),
)

_SIGLIP_LAYER = tuple(
    [(f"layer_norm{n}.{hf}", (f"layer_norm{n}", fx), "identity")
     for n in (1, 2) for hf, fx in (("weight", "scale"), ("bias", "bias"))]
    + [(f"self_attn.{p}.{hf}", ("self_attn", p, fx), t)
       for p in ("q_proj", "k_proj", "v_proj", "out_proj")
       for hf, fx, t in (("weight", "kernel", "linear"), ("bias", "bias", "identity"))]
    + [(f"mlp.{p}.{hf}", ("mlp", p, fx), t)
       for p in ("fc1", "fc2")
       for hf, fx, t in (("weight", "kernel", "linear"), ("bias", "bias", "identity"))])


def _layer_entries(layer_table, hf_layer_prefix: str, flax_prefix: tuple[str, ...], num_layers: int,
                   scan: bool) -> list[Entry]:
  entries = []
  for hf_rel, flax_rel, transform in layer_table:
    keys = tuple(f"{hf_layer_prefix}{i}.{hf_rel}" for i in range(num_layers))
    if scan:
      entries.append(Entry(flax_prefix + ("layers",) + flax_rel, keys, transform, stacked=True))
    else:
      entries.extend(Entry(flax_prefix + (f"layers_{i}",) + flax_rel, (k,), transform)
                     for i, k in enumerate(keys))
  return entries


def llada_entries(config: LLaDAConfig, *, scan: bool, hf_prefix: str = "model.",
                  head_key: str = "lm_head.weight", flax_prefix: tuple[str, ...] = ()) -> list[Entry]:
  """The language tower in the LLaMA layout (`model.layers.N...`, `lm_head`)."""
  return [
      Entry(flax_prefix + ("embed_tokens", "embedding"), (f"{hf_prefix}embed_tokens.weight",), "identity"),
      *_layer_entries(_LLADA_LAYER, f"{hf_prefix}layers.", flax_prefix, config.num_hidden_layers, scan),
      Entry(flax_prefix + ("norm", "scale"), (f"{hf_prefix}norm.weight",), "identity"),
      Entry(flax_prefix + ("lm_head", "kernel"), (head_key,), "linear"),
  ]


def llada_original_entries(config: LLaDAConfig, *, scan: bool,
                           flax_prefix: tuple[str, ...] = ()) -> list[Entry]:
  """The language tower in the original LLaDA-8B layout (`model.transformer.blocks.N...`)."""
  prefix = "model.transformer."
  return [
      Entry(flax_prefix + ("embed_tokens", "embedding"), (f"{prefix}wte.weight",), "identity"),
      *_layer_entries(_LLADA_ORIGINAL_LAYER, f"{prefix}blocks.", flax_prefix, config.num_hidden_layers, scan),
      Entry(flax_prefix + ("norm", "scale"), (f"{prefix}ln_f.weight",), "identity"),
      Entry(flax_prefix + ("lm_head", "kernel"), (f"{prefix}ff_out.weight",), "linear"),
  ]


def siglip_entries(config: SiglipConfig, *, num_layers: int, scan: bool, hf_prefix: str = "vision_model.",
                   flax_prefix: tuple[str, ...] = ()) -> list[Entry]:
  """The vision tower in the SigLIP layout, `num_layers` encoder layers (no pooling head)."""
  del config
  emb = f"{hf_prefix}embeddings."
  return [
      Entry(flax_prefix + ("embeddings", "patch_embedding", "kernel"), (f"{emb}patch_embedding.weight",), "conv"),
      Entry(flax_prefix + ("embeddings", "patch_embedding", "bias"), (f"{emb}patch_embedding.bias",), "identity"),
      Entry(flax_prefix + ("embeddings", "position_embedding"), (f"{emb}position_embedding.weight",), "identity"),
      *_layer_entries(_SIGLIP_LAYER, f"{hf_prefix}encoder.layers.", flax_prefix + ("encoder",), num_layers, scan),
      Entry(flax_prefix + ("post_layernorm", "scale"), (f"{hf_prefix}post_layernorm.weight",), "identity"),
      Entry(flax_prefix + ("post_layernorm", "bias"), (f"{hf_prefix}post_layernorm.bias",), "identity"),
  ]


def projector_entries(config: ProjectorConfig, *, hf_prefix: str = "model.mm_projector.",
                      flax_prefix: tuple[str, ...] = ("mm_projector",)) -> list[Entry]:
  """Linear layers sit at even indices of the upstream nn.Sequential (GELUs in between)."""
  entries = []
  for n in range(1, config.depth + 1):
    hf = f"{hf_prefix}{2 * (n - 1)}."
    entries.append(Entry(flax_prefix + (f"linear_{n}", "kernel"), (f"{hf}weight",), "linear"))
    entries.append(Entry(flax_prefix + (f"linear_{n}", "bias"), (f"{hf}bias",), "identity"))
  return entries


def lladav_entries(config: LLaDAVConfig, *, scan: bool) -> list[Entry]:
  """The whole LLaDA-V checkpoint as published (vision tower truncated to the feature depth)."""
  return [
      *llada_entries(config.text, scan=scan, hf_prefix=LLADAV_TEXT_PREFIX, flax_prefix=("language_model",)),
      *siglip_entries(config.vision, num_layers=config.vision_feature_depth, scan=scan,
                      hf_prefix=LLADAV_VISION_PREFIX, flax_prefix=("vision_tower",)),
      *projector_entries(config.projector),
      Entry(("image_newline",), ("model.image_newline",), "identity"),
  ]


def _set(tree: dict, path: tuple[str, ...], value) -> None:
  for key in path[:-1]:
    tree = tree.setdefault(key, {})
  if path[-1] in tree:
    raise ValueError(f"parameter {'/'.join(path)} is mapped twice")
  tree[path[-1]] = value


def _get(tree: Mapping, path: tuple[str, ...]):
  for key in path:
    if key not in tree:
      raise KeyError(f"parameter {'/'.join(path)} is missing from the tree")
    tree = tree[key]
  return tree


def read_entry(entry: Entry, get_tensor: Callable[[str], np.ndarray], dtype=None) -> np.ndarray:
  """One parameter leaf from its HF tensors, read one at a time (a stacked leaf is filled layer by
  layer into one preallocated array, so the peak is the leaf plus one source tensor)."""
  def convert(key):
    value = TO_FLAX[entry.transform](np.asarray(get_tensor(key)))
    return value if dtype is None else value.astype(dtype, copy=False)

  if not entry.stacked:
    return convert(entry.hf_keys[0])
  first = convert(entry.hf_keys[0])
  out = np.empty((len(entry.hf_keys),) + first.shape, first.dtype)
  out[0] = first
  del first
  for i, key in enumerate(entry.hf_keys[1:], start=1):
    value = convert(key)
    if value.shape != out.shape[1:] or value.dtype != out.dtype:
      raise ValueError(f"{key}: {value.dtype}{list(value.shape)} differs from layer 0 of the stack "
                       f"({out.dtype}{list(out.shape[1:])})")
    out[i] = value
  return out


def params_from_hf(get_tensor: Callable[[str], np.ndarray], entries: list[Entry]) -> dict:
  """Builds the nested parameter dict, reading each HF tensor through `get_tensor(key)`."""
  params: dict = {}
  for entry in entries:
    _set(params, entry.path, read_entry(entry, get_tensor))
  return params


def params_to_hf(params: Mapping, entries: list[Entry]) -> Iterator[tuple[str, np.ndarray]]:
  """Yields (HF key, tensor) pairs for a parameter tree, one tensor at a time."""
  for entry in entries:
    value = np.asarray(_get(params, entry.path))
    if entry.stacked:
      if value.shape[0] != len(entry.hf_keys):
        raise ValueError(f"{'/'.join(entry.path)}: stacked over {value.shape[0]} layers, "
                         f"expected {len(entry.hf_keys)}")
      for key, layer in zip(entry.hf_keys, value):
        yield key, TO_HF[entry.transform](layer)
    else:
      yield entry.hf_keys[0], TO_HF[entry.transform](value)

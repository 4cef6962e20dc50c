"""The TPU Pallas splash-attention kernel (`jax.experimental.pallas.ops.tpu`), sharded over the mesh.

The kernel gets a full (bidirectional) mask per head and the mask's ids as its segment ids, which
covers packing, padding and the decoding masks (models/masks.py). Turn ids ("dialogue causal") are
not expressible as segment ids: asking for them is an error (use "blockwise", "xla" or "cudnn").

Inside a mesh (`jax.set_mesh`) the call is a `shard_map`: rows split over the mesh axes of
activation_batch and heads over those of activation_heads (by the logical-axis rules in effect, where
they divide the rows and the key/value heads), so each device builds the kernel for its own heads and
maps it over its own rows; the sequence is never split (every query needs every key). Lengths are padded to the kernel's 128-lane tiles with padding
ids, and the query is scaled before the call (the kernel applies no scale). On CPU the kernel runs
in Pallas interpret mode (for tests; slow); on GPU use "cudnn" or "blockwise".
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel, splash_attention_mask
from jax.sharding import PartitionSpec

from lladav_jax import sharding
from lladav_jax.models.masks import AttentionMask, full_attention_mask

_LANES = 128  # the kernel's key block must be a multiple of this
_BLOCKS = (512, 256, _LANES)  # the largest that divides the padded length is used


def splash_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: AttentionMask | None) -> jax.Array:
  """query: [B, L, H, Dh]; key/value: [B, S, KVH, Dh] (H a multiple of KVH) -> [B, L, H, Dh]."""
  if mask is not None and mask.has_turns:
    raise ValueError("compute.attention_impl = 'splash' cannot express the dialogue-causal mask (turn ids); "
                     "use 'blockwise', 'xla' or 'cudnn'")
  backend = jax.default_backend()
  if backend not in ("tpu", "cpu"):
    raise ValueError(f"compute.attention_impl = 'splash' is a TPU kernel; on {backend} use 'cudnn' or 'blockwise'")
  b, length, _, head_dim = query.shape
  keys = key.shape[1]
  if mask is None:
    mask = full_attention_mask(b, length, keys)
  padded_q, padded_k = -(-length // _LANES) * _LANES, -(-keys // _LANES) * _LANES
  mask = mask.padded(padded_q, padded_k)

  def heads_first(x, padded_length):
    return jnp.pad(x, ((0, 0), (0, padded_length - x.shape[1]), (0, 0), (0, 0))).transpose(0, 2, 1, 3)

  scaled = (query * jnp.asarray(head_dim ** -0.5, query.dtype)).astype(query.dtype)
  args = (heads_first(scaled, padded_q), heads_first(key, padded_k), heads_first(value, padded_k),
          mask.query_segments, mask.key_segments)
  run = lambda *a: _run_kernel(*a, interpret=backend == "cpu")
  mesh = jax.sharding.get_abstract_mesh()
  if not mesh.empty:
    rows = _splitting(mesh, nn.logical_to_mesh_axes((sharding.ACT_BATCH,))[0], b)
    heads = _splitting(mesh, nn.logical_to_mesh_axes((sharding.ACT_HEADS,))[0], key.shape[2])
    per_head = PartitionSpec(rows, heads, None, None)
    per_token = PartitionSpec(rows, None)
    run = jax.shard_map(run, mesh=mesh, in_specs=(per_head,) * 3 + (per_token,) * 2, out_specs=per_head,
                        check_vma=False)
  return run(*args).transpose(0, 2, 1, 3)[:, :length]


def _splitting(mesh, axes, size: int):
  """The mesh axes a dimension of `size` is split over: the rules' axes where they divide it, else
  none (e.g. one row while tracing init or decoding: then every device runs all of it)."""
  names = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  parts = 1
  for name in names:
    parts *= mesh.shape[name]
  return axes if size % parts == 0 else None


def _run_kernel(q, k, v, query_ids, key_ids, *, interpret: bool) -> jax.Array:
  """One device's rows: q [b, h, L, Dh], k/v [b, kvh, S, Dh], ids [b, L] / [b, S] -> [b, h, L, Dh]."""
  heads, q_length, k_length = q.shape[1], q.shape[2], k.shape[2]
  block_q = next(size for size in _BLOCKS if q_length % size == 0)
  block_k = next(size for size in _BLOCKS if k_length % size == 0)
  sizes = splash_attention_kernel.BlockSizes(
      block_q=block_q, block_kv=block_k, block_kv_compute=block_k, block_q_dkv=block_q, block_kv_dkv=block_k,
      block_kv_dkv_compute=block_k, block_q_dq=block_q, block_kv_dq=block_k)
  full = splash_attention_mask.MultiHeadMask([splash_attention_mask.FullMask((q_length, k_length))] * heads)
  kernel = splash_attention_kernel.make_splash_mha(full, block_sizes=sizes, head_shards=1, q_seq_shards=1,
                                                   interpret=interpret)
  one_row = lambda q, k, v, qi, ki: kernel(q, k, v, segment_ids=splash_attention_kernel.SegmentIds(qi, ki))
  return jax.vmap(one_row)(q, k, v, query_ids, key_ids)

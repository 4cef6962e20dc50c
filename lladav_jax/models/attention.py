"""Scaled dot-product attention behind `compute.attention_impl` (models/compute.py ATTENTION_IMPLS).

Every implementation takes the same inputs: query [B, L, H, Dh], key/value [B, S, KVH, Dh] (H a
multiple of KVH: grouped key/value heads) and an `AttentionMask` (ids per token, models/masks.py) or
None (every query sees every key); each returns [B, L, H, Dh] with a float32 softmax.

  "xla"        plain einsums: portable, materialises the float32 scores [B, H, L, S];
  "blockwise"  flash-style attention in plain JAX (models/blockwise_attention.py), every backend;
  "chunked"    one chunk of queries at a time, the exact softmax over all keys, heads first
               (models/chunked_attention.py): the fast one on CPU, where decoding runs by default;
  "splash"     the TPU Pallas kernel, sharded over the mesh (models/splash_attention.py); no turn ids;
  "cudnn"      the fused GPU kernel of `jax.nn.dot_product_attention`; the mask becomes an additive
               bias [B, 1, L, S] in the compute dtype (float16/bfloat16 only, head_dim <= 128).
"""

import jax
import jax.numpy as jnp

from lladav_jax.models.blockwise_attention import blockwise_attention
from lladav_jax.models.chunked_attention import chunked_attention
from lladav_jax.models.masks import AttentionMask
from lladav_jax.models.splash_attention import splash_attention


def dot_product_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: AttentionMask | None,
                          impl: str) -> jax.Array:
  """Attention of `query` over `key`/`value` under `mask` with the implementation `impl`."""
  if impl == "blockwise":
    return blockwise_attention(query, key, value, mask)
  if impl == "chunked":
    return chunked_attention(query, key, value, mask)
  if impl == "splash":
    return splash_attention(query, key, value, mask)
  dense = None if mask is None else mask.dense()
  if impl == "cudnn":
    if jax.default_backend() != "gpu":
      raise ValueError(f"compute.attention_impl = 'cudnn' is a GPU kernel; on {jax.default_backend()} use "
                       f"'blockwise' or 'xla'")
    return jax.nn.dot_product_attention(query, key, value, mask=dense, implementation="cudnn")
  return xla_attention(query, key, value, dense)


def xla_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: jax.Array | None) -> jax.Array:
  """The plain path; mask: bool [B, 1, L, S] (True = attend) or None."""
  b, length, heads, head_dim = query.shape
  kv_heads = key.shape[2]
  query = query.reshape(b, length, kv_heads, heads // kv_heads, head_dim)
  scores = jnp.einsum("blkgd,bskd->bkgls", query, key, preferred_element_type=jnp.float32)
  scores = scores * (head_dim ** -0.5)
  if mask is not None:
    scores = jnp.where(mask[:, :, None], scores, jnp.finfo(jnp.float32).min)
  probs = jax.nn.softmax(scores, axis=-1).astype(value.dtype)
  out = jnp.einsum("bkgls,bskd->blkgd", probs, value)
  return out.reshape(b, length, heads, head_dim)

"""Attention one chunk of queries at a time: the exact softmax over every key, chunk by chunk.

Made for decoding on CPU, where the plain path's [B, H, L, S] float32 scores (76 MB per layer for
1.5k tokens and 8 heads) leave the cache between the score matmul, the mask, the softmax's passes
and the value matmul. Here a `lax.map` over the batch's rows and, within a row, over chunks of
QUERY_CHUNK queries keeps one chunk's scores [H, chunk, S] cache-sized whatever the batch size (a
batch of 8 in one chunk's scores took twice as long), the layout is heads first ([KVH, G, chunk, Dh]
against keys [KVH, Dh, S] and values [KVH, S, Dh]) so that both matmuls are plain batched dots, and
the softmax's normaliser divides the chunk's output [.., chunk, Dh] instead of its probabilities.
No online softmax: every chunk sees all keys at once, so there is no rescaling either.
Differentiable by ordinary autodiff (the maps are scans), though training has `blockwise` for its
memory.

Masked scores are set to the float32 minimum, as in the plain path; queries added to fill the last
chunk see no key and are dropped.
"""

import jax
import jax.numpy as jnp

from lladav_jax.models.masks import AttentionMask

QUERY_CHUNK = 128  # queries per chunk: 128 x 1.5k float32 scores per head, about 0.8 MB
_MASKED = float(jnp.finfo(jnp.float32).min)


def chunked_attention(query: jax.Array, key: jax.Array, value: jax.Array, mask: AttentionMask | None) -> jax.Array:
  """query: [B, L, H, Dh]; key/value: [B, S, KVH, Dh] (H a multiple of KVH) -> [B, L, H, Dh].

  A batch goes row by row (a `lax.map`), so that a chunk's scores are one row's: as cache-sized at
  batch 8 as at batch 1, and every row computed with the shapes it has alone."""
  if query.shape[0] == 1:
    return _one_row(query, key, value, mask)
  add_row_axis = lambda tree: jax.tree_util.tree_map(lambda x: x[None], tree)
  rows = jax.lax.map(lambda row: _one_row(*add_row_axis(row)), (query, key, value, mask))
  return rows[:, 0]


def _one_row(query: jax.Array, key: jax.Array, value: jax.Array, mask: AttentionMask | None) -> jax.Array:
  """`chunked_attention` of a batch of one."""
  b, length, heads, head_dim = query.shape
  kv_heads = key.shape[2]
  groups = heads // kv_heads
  chunk = min(QUERY_CHUNK, length)
  chunks = -(-length // chunk)
  padded = chunks * chunk
  if mask is not None:
    mask = mask.padded(padded, key.shape[1])
  q = jnp.pad(query, ((0, 0), (0, padded - length), (0, 0), (0, 0)))
  # [B, L, KVH * G, Dh] -> [chunks, B, KVH, G, chunk, Dh]
  q = q.reshape(b, chunks, chunk, kv_heads, groups, head_dim).transpose(1, 0, 3, 4, 2, 5)
  # Keys as [B, KVH, Dh, S], the layout the CPU's matmul wants for the scores' right-hand side: transposed
  # once here, not once per chunk inside the map. Values [B, KVH, S, Dh].
  keys, values = key.transpose(0, 2, 3, 1), value.transpose(0, 2, 1, 3)

  def chunk_ids(ids):
    return None if ids is None else jnp.moveaxis(ids.reshape(b, chunks, chunk), 1, 0)

  def attend(args):
    q_chunk, segments, turns = args
    scores = jnp.einsum("bkgqd,bkds->bkgqs", q_chunk, keys, preferred_element_type=jnp.float32)
    scores = scores * (head_dim ** -0.5)
    if mask is not None:
      visible = AttentionMask(segments, mask.key_segments, turns, mask.key_turns).visible()
      scores = jnp.where(visible[:, None, None], scores, _MASKED)
    weights = jnp.exp(scores - scores.max(axis=-1, keepdims=True))
    out = jnp.einsum("bkgqs,bksd->bkgqd", weights.astype(value.dtype), values, preferred_element_type=jnp.float32)
    return (out / weights.sum(axis=-1)[..., None]).astype(query.dtype)

  ids = (None, None) if mask is None else (chunk_ids(mask.query_segments), chunk_ids(mask.query_turns))
  out = jax.lax.map(attend, (q, *ids))  # [chunks, B, KVH, G, chunk, Dh]
  out = out.transpose(1, 0, 4, 2, 3, 5).reshape(b, padded, heads, head_dim)
  return out[:, :length]

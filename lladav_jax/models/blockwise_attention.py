"""Flash-style attention in plain JAX: an online softmax over key blocks, never the [L, S] scores.

Runs on every backend (CPU included, so its memory can be measured with the CPU compiler) and serves
hardware without a fused kernel. Queries and keys are cut into blocks of at most `BLOCK` positions;
for each query block a scan over the key blocks keeps the running maximum, the softmax denominator
and the unnormalised output in float32. The custom VJP stores only the output and the log-sum-exp
per query and recomputes each block's scores in the backward pass (FlashAttention-2's recurrences:
one pass over key blocks, an inner pass over query blocks, dq accumulated across key blocks).

Masked scores are set to the float32 minimum, as in the plain path, so a block that a query cannot
see contributes nothing once a visible key has raised the running maximum. Every query must see at
least one key; the masks of models/masks.py guarantee it.
"""

import functools
import math

import jax
import jax.numpy as jnp

from lladav_jax.models.masks import AttentionMask, full_attention_mask

BLOCK = 512  # the most query or key positions per block
_SUBLANES = 8  # block lengths are rounded up to a multiple of this
_MASKED = float(jnp.finfo(jnp.float32).min)


def block_length(length: int) -> int:
  """The block size for `length` positions: the fewest blocks of at most BLOCK, evenly sized."""
  blocks = math.ceil(length / BLOCK)
  return min(BLOCK, math.ceil(math.ceil(length / blocks) / _SUBLANES) * _SUBLANES)


def blockwise_attention(query: jax.Array, key: jax.Array, value: jax.Array,
                        mask: AttentionMask | None) -> jax.Array:
  """query: [B, L, H, Dh]; key/value: [B, S, KVH, Dh] (H a multiple of KVH) -> [B, L, H, Dh]."""
  b, length, heads, head_dim = query.shape
  keys, kv_heads = key.shape[1], key.shape[2]
  if mask is None:
    mask = full_attention_mask(b, length, keys)
  block_q, block_k = block_length(length), block_length(keys)
  padded_q, padded_k = -(-length // block_q) * block_q, -(-keys // block_k) * block_k
  mask = mask.padded(padded_q, padded_k)
  pad = lambda x, n: jnp.pad(x, ((0, 0), (0, n - x.shape[1]), (0, 0), (0, 0)))
  grouped = pad(query, padded_q).reshape(b, padded_q, kv_heads, heads // kv_heads, head_dim)
  out = _attention(grouped, pad(key, padded_k), pad(value, padded_k), mask, block_q, block_k)
  return out.reshape(b, padded_q, heads, head_dim)[:, :length]


def _blocks(x: jax.Array, size: int) -> jax.Array:
  """[B, N * size, ...] -> [N, B, size, ...] (the scan axis first)."""
  return jnp.moveaxis(x.reshape((x.shape[0], x.shape[1] // size, size) + x.shape[2:]), 1, 0)


def _unblocks(x: jax.Array) -> jax.Array:
  """[N, B, size, ...] -> [B, N * size, ...]."""
  x = jnp.moveaxis(x, 0, 1)
  return x.reshape((x.shape[0], x.shape[1] * x.shape[2]) + x.shape[3:])


def _mask_blocks(mask: AttentionMask, block_q: int, block_k: int):
  """Query ids [Nq, B, bq] and key ids [Nk, B, bk] (turns None when the mask has none)."""
  turns = lambda ids, size: None if ids is None else _blocks(ids, size)
  return ((_blocks(mask.query_segments, block_q), turns(mask.query_turns, block_q)),
          (_blocks(mask.key_segments, block_k), turns(mask.key_turns, block_k)))


def _scores(q: jax.Array, k: jax.Array, q_ids, k_ids) -> jax.Array:
  """q [B, bq, K, G, D], k [B, bk, K, D] -> masked float32 scores [B, K, G, bq, bk]."""
  scores = jnp.einsum("bqkgd,bskd->bkgqs", q, k, preferred_element_type=jnp.float32) * (q.shape[-1] ** -0.5)
  visible = AttentionMask(q_ids[0], k_ids[0], q_ids[1], k_ids[1]).visible()
  return jnp.where(visible[:, None, None], scores, _MASKED)


def _forward(q, k, v, mask, block_q, block_k):
  """-> (out [B, Lq, K, G, D], log-sum-exp [Nq, B, K, G, bq])."""
  q_ids, k_ids = _mask_blocks(mask, block_q, block_k)
  k_blocks, v_blocks = _blocks(k, block_k), _blocks(v, block_k)

  def query_block(args):
    q_block, q_block_ids = args
    b, bq, kv_heads, groups, head_dim = q_block.shape

    def key_block(carry, kv):
      running_max, denominator, acc = carry
      k_block, v_block, k_block_ids = kv
      scores = _scores(q_block, k_block, q_block_ids, k_block_ids)
      new_max = jnp.maximum(running_max, scores.max(-1))
      correction = jnp.exp(running_max - new_max)
      probs = jnp.exp(scores - new_max[..., None])
      denominator = denominator * correction + probs.sum(-1)
      update = jnp.einsum("bkgqs,bskd->bkgqd", probs.astype(v_block.dtype), v_block,
                          preferred_element_type=jnp.float32)
      return (new_max, denominator, acc * correction[..., None] + update), None

    stats = (b, kv_heads, groups, bq)
    init = (jnp.full(stats, _MASKED, jnp.float32), jnp.zeros(stats, jnp.float32),
            jnp.zeros(stats + (head_dim,), jnp.float32))
    (running_max, denominator, acc), _ = jax.lax.scan(key_block, init, (k_blocks, v_blocks, k_ids))
    out = (acc / denominator[..., None]).astype(q.dtype)
    return jnp.moveaxis(out, 3, 1), running_max + jnp.log(denominator)

  out, log_sum_exp = jax.lax.map(query_block, (_blocks(q, block_q), q_ids))
  return _unblocks(out), log_sum_exp


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5))
def _attention(q, k, v, mask, block_q, block_k):
  return _forward(q, k, v, mask, block_q, block_k)[0]


def _attention_fwd(q, k, v, mask, block_q, block_k):
  out, log_sum_exp = _forward(q, k, v, mask, block_q, block_k)
  return out, (q, k, v, mask, out, log_sum_exp)


def _attention_bwd(block_q, block_k, residuals, d_out):
  q, k, v, mask, out, log_sum_exp = residuals
  scale = q.shape[-1] ** -0.5
  q_ids, k_ids = _mask_blocks(mask, block_q, block_k)
  # delta_i = sum_d dO_id O_id: the softmax backward's row term, [Nq, B, K, G, bq].
  delta = jnp.moveaxis(jnp.sum(d_out.astype(jnp.float32) * out.astype(jnp.float32), -1), 1, -1)
  delta = jnp.moveaxis(delta.reshape(delta.shape[:-1] + (-1, block_q)), -2, 0)
  q_blocks, d_out_blocks = _blocks(q, block_q), _blocks(d_out, block_q)

  def key_block(dq, kv):
    k_block, v_block, k_block_ids = kv

    def query_block(carry, args):
      dk, dv = carry
      q_block, d_out_block, lse_block, delta_block, q_block_ids = args
      probs = jnp.exp(_scores(q_block, k_block, q_block_ids, k_block_ids) - lse_block[..., None])
      dv = dv + jnp.einsum("bkgqs,bqkgd->bskd", probs.astype(d_out.dtype), d_out_block,
                           preferred_element_type=jnp.float32)
      d_probs = jnp.einsum("bqkgd,bskd->bkgqs", d_out_block, v_block, preferred_element_type=jnp.float32)
      d_scores = (probs * (d_probs - delta_block[..., None]) * scale).astype(q.dtype)
      dk = dk + jnp.einsum("bkgqs,bqkgd->bskd", d_scores, q_block, preferred_element_type=jnp.float32)
      dq_block = jnp.einsum("bkgqs,bskd->bqkgd", d_scores, k_block, preferred_element_type=jnp.float32)
      return (dk, dv), dq_block

    zeros = jnp.zeros(k_block.shape, jnp.float32)
    (dk, dv), dq_blocks = jax.lax.scan(query_block, (zeros, zeros),
                                       (q_blocks, d_out_blocks, log_sum_exp, delta, q_ids))
    return dq + dq_blocks, (dk, dv)

  dq, (dk, dv) = jax.lax.scan(key_block, jnp.zeros(q_blocks.shape, jnp.float32),
                              (_blocks(k, block_k), _blocks(v, block_k), k_ids))
  return (_unblocks(dq).astype(q.dtype), _unblocks(dk).astype(k.dtype), _unblocks(dv).astype(v.dtype), None)


_attention.defvjp(_attention_fwd, _attention_bwd)

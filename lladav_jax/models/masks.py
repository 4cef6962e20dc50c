"""Attention masks built from per-token data, never from flags.

A mask is per-token ids, not a [L, S] array, so that every attention implementation takes the same
input (the kernels compare ids block by block; the plain path expands them with `dense`):

  query i may attend to key j  iff  query_segments[i] == key_segments[j]
                               and  key_turns[j] <= query_turns[i]     (only when turns are given)

The training rule (`make_attention_mask`) in these terms: token i sees token j iff j is not padding,
both are in the same packed segment, and turn[j] <= turn[i]. With one segment and all turns equal
that is LLaDA's full bidirectional attention; with turns it is the "dialogue causal" mask. Padding
(segment 0) gets an id of its own, -1 - position: a padding query sees only itself (no attention row
is empty) and no other query sees it. Decoding (`visible_keys_mask`) lets every query see the keys
marked visible.
"""

import flax.struct
import jax
import jax.numpy as jnp

# The id of positions a kernel appends to reach its block size: padded queries see only padded keys,
# and no real query sees them (real ids are segments >= 0, own ids -1 - position, never this).
KERNEL_PADDING_ID = int(jnp.iinfo(jnp.int32).min)


@flax.struct.dataclass
class AttentionMask:
  """Which keys each query sees, as ids per token (see the module docstring)."""

  query_segments: jax.Array  # int32 [B, L]
  key_segments: jax.Array  # int32 [B, S]
  query_turns: jax.Array | None = None  # int32 [B, L]: "dialogue causal" when given
  key_turns: jax.Array | None = None  # int32 [B, S]

  @property
  def has_turns(self) -> bool:
    return self.query_turns is not None

  def visible(self) -> jax.Array:
    """bool [B, L, S]: which keys each query sees."""
    allowed = self.query_segments[:, :, None] == self.key_segments[:, None, :]
    if self.has_turns:
      allowed = allowed & (self.key_turns[:, None, :] <= self.query_turns[:, :, None])
    return allowed

  def padded(self, query_length: int, key_length: int) -> "AttentionMask":
    """The same mask over `query_length` queries and `key_length` keys, the added ones padding."""
    def pad(ids, length, value):
      return None if ids is None else jnp.pad(ids, ((0, 0), (0, length - ids.shape[1])), constant_values=value)
    return AttentionMask(pad(self.query_segments, query_length, KERNEL_PADDING_ID),
                         pad(self.key_segments, key_length, KERNEL_PADDING_ID),
                         pad(self.query_turns, query_length, 0), pad(self.key_turns, key_length, 0))

  def dense(self) -> jax.Array:
    """bool [B, 1, L, S] (True = attend), for the implementations that take a full mask."""
    return self.visible()[:, None]


def full_attention_mask(batch: int, query_length: int, key_length: int) -> AttentionMask:
  """Every query sees every key (what `mask=None` means)."""
  return AttentionMask(jnp.zeros((batch, query_length), jnp.int32), jnp.zeros((batch, key_length), jnp.int32))


def make_attention_mask(segment_ids: jax.Array, turn_ids: jax.Array | None = None) -> AttentionMask:
  """segment_ids: int[B, L] (0 = padding); turn_ids: int[B, L] or None -> self-attention mask over L."""
  segment_ids = jnp.asarray(segment_ids, jnp.int32)
  own_id = -1 - jnp.arange(segment_ids.shape[1], dtype=jnp.int32)
  segments = jnp.where(segment_ids == 0, own_id[None], segment_ids)
  turns = None if turn_ids is None else jnp.asarray(turn_ids, jnp.int32)
  return AttentionMask(segments, segments, turns, turns)


def visible_keys_mask(visible: jax.Array, query_length: int) -> AttentionMask:
  """visible: bool[B, S] -> every one of `query_length` queries sees exactly the visible keys."""
  queries = jnp.ones((visible.shape[0], query_length), jnp.int32)
  return AttentionMask(queries, jnp.asarray(visible, jnp.int32))

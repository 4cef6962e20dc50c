"""Attention masks built from per-token data, never from flags.

One rule covers every case the model needs:
  token i may attend to token j  iff  segment[j] != 0            (j is not padding)
                                 and segment[i] == segment[j]    (packed samples stay apart)
                                 and turn[j] <= turn[i]          ("dialogue causal" when turns vary)
With one segment and all turns equal this is LLaDA's full bidirectional attention.
"""

import jax
import jax.numpy as jnp


def make_attention_mask(segment_ids: jax.Array, turn_ids: jax.Array | None = None) -> jax.Array:
  """segment_ids: int[B, L] (0 = padding); turn_ids: int[B, L] or None -> bool[B, 1, L, L]."""
  same_segment = segment_ids[:, :, None] == segment_ids[:, None, :]
  mask = same_segment & (segment_ids[:, None, :] != 0)
  if turn_ids is not None:
    mask = mask & (turn_ids[:, None, :] <= turn_ids[:, :, None])
  # A padding query would otherwise see nothing; let it see itself so no kernel meets an empty row.
  length = segment_ids.shape[1]
  padding_self = (segment_ids == 0)[:, :, None] & jnp.eye(length, dtype=bool)[None]
  return (mask | padding_self)[:, None, :, :]


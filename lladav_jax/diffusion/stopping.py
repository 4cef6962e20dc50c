"""Stop sequences in the generated region.

Once a stop sequence stands in committed tokens, positions from its start on are frozen (never
committed), decoding of the row ends when every mask before it is filled, and the answer is cut at
its start. Stop positions are generated-region offsets; `gen_length` means "no stop".

Two rules for which occurrence counts:
  "earliest"  the earliest committed occurrence of any sequence (what upstream intends);
  "upstream"  upstream's scan: on the first step that finds any, the earliest occurrence of the first
              sequence in the list that occurs; afterwards only the first sequence of the list is
              looked at again (its occurrence wins if earlier).
They differ only with several stop sequences.
"""

import jax
import jax.numpy as jnp


def first_occurrence(tokens: jax.Array, committed: jax.Array, sequence: tuple[int, ...]) -> jax.Array:
  """tokens: int32 [B, G]; committed: bool [B, G] -> int32 [B], start of the first occurrence made
  of committed tokens only (G if none)."""
  length = tokens.shape[1]
  n = len(sequence)
  if n > length:
    return jnp.full(tokens.shape[:1], length, jnp.int32)
  starts = length - n + 1
  hit = jnp.ones((tokens.shape[0], starts), bool)
  for k, token in enumerate(sequence):
    window = slice(k, k + starts)
    hit = hit & committed[:, window] & (tokens[:, window] == token)
  index = jnp.arange(starts, dtype=jnp.int32)
  return jnp.min(jnp.where(hit, index, length), axis=-1).astype(jnp.int32)


def update_stop(stop: jax.Array, tokens: jax.Array, committed: jax.Array,
                sequences: tuple[tuple[int, ...], ...], order: str) -> jax.Array:
  """stop: int32 [B] so far (G = none found) -> the stop after this step's commits."""
  if not sequences:
    return stop
  length = tokens.shape[1]
  found = [first_occurrence(tokens, committed, s) for s in sequences]
  if order == "earliest":
    return jnp.minimum(stop, jnp.min(jnp.stack(found), axis=0))
  # upstream: before any stop was found, the first sequence (in list order) that occurs wins ...
  first_found = jnp.full_like(stop, length)
  for position in reversed(found):
    first_found = jnp.where(position < length, position, first_found)
  # ... afterwards only the first sequence is scanned again.
  return jnp.where(stop < length, jnp.minimum(stop, found[0]), first_found)

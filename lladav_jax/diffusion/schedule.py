"""How many masked positions each step commits (LLaDA's linear schedule, per block).

A block of `count` masked positions decoded in `steps` steps commits count // steps per step, and the
first count % steps steps commit one more (upstream `get_num_transfer_tokens`), so the block is full
after its last step.
"""

import jax
import jax.numpy as jnp


def step_quota(count: jax.Array, steps: int, step: jax.Array) -> jax.Array:
  """count: int[B] masks at the block's start; step: scalar index in the block -> int32[B]."""
  count = count.astype(jnp.int32)
  return count // steps + (step < count % steps).astype(jnp.int32)


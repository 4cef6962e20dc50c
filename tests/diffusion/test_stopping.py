"""Stop-sequence scans against the reference's loops, step by step over random commit orders."""

import jax.numpy as jnp
import numpy as np
import pytest

from lladav_jax.diffusion.stopping import update_stop
from tests.diffusion.reference import _find_stop

STOPS = ((3,), (4, 5), (6,))


@pytest.mark.parametrize("order", ["earliest", "upstream"])
def test_update_stop_matches_the_reference_scan(order):
  rng = np.random.default_rng(0)
  gen = 12
  for trial in range(40):
    tokens = rng.integers(3, 8, size=gen)
    commit_order = rng.permutation(gen)
    masked = np.ones(gen, bool)
    found, ref_stop = False, gen
    stop = jnp.asarray([gen], jnp.int32)
    for chunk in np.array_split(commit_order, 6):  # six steps of commits
      masked[chunk] = False
      found, ref_stop = _find_stop(list(tokens), list(masked), STOPS, found, ref_stop, order)
      stop = update_stop(stop, jnp.asarray(tokens[None], jnp.int32), jnp.asarray(~masked[None]), STOPS, order)
      assert int(stop[0]) == ref_stop, (trial, order)


def test_rules_differ_when_a_later_listed_stop_appears_earlier_afterwards():
  gen = 6
  tokens = jnp.asarray([[9, 9, 6, 9, 3, 9]], jnp.int32)
  first = jnp.asarray([[False, False, False, False, True, False]])  # step 1 commits the 3 at 4
  both = first.at[0, 2].set(True)  # step 2 commits the 6 at 2
  results = {}
  for order in ("earliest", "upstream"):
    stop = update_stop(jnp.asarray([gen]), tokens, first, STOPS, order)
    assert int(stop[0]) == 4
    results[order] = int(update_stop(stop, tokens, both, STOPS, order)[0])
  # Upstream rescans only the first listed stop (3) once one was found, so the 6 at 2 is missed.
  assert results == {"earliest": 2, "upstream": 4}

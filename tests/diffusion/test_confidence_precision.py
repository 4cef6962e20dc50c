"""Ranking by confidence where float32 probabilities are all 1: against a float64 re-statement.

Upstream ranks masked positions by the float64 softmax probability of the chosen token and takes the
top k with torch.topk, whose partial sort keeps the lower position among equal values. The
re-statement below computes that probability with a correctly rounded float64 sum (math.fsum), so
"p = 1.0 exactly" means what float64 makes of 1 + (the other tokens' mass).
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lladav_jax.diffusion import remasking

VOCAB = 1000


def confident_logits(leads, seed=0):
  """float32 [1, T, V]: row t's argmax (token t) leads the others by leads[t] nats or more."""
  rng = np.random.default_rng(seed)
  rows = []
  for t, lead in enumerate(leads):
    row = -lead - rng.uniform(0.0, 3.0, VOCAB).astype(np.float32)
    row[t] = 0.0
    rows.append(row)
  return np.stack(rows)[None].astype(np.float32)


def float64_probability(row: np.ndarray, token: int) -> float:
  terms = np.exp(row.astype(np.float64) - np.float64(row[token]))
  return 1.0 / math.fsum(terms.tolist())


def reference_order(logits: np.ndarray, tokens: np.ndarray, eligible: np.ndarray) -> list[int]:
  """Eligible positions, most probable first, equal float64 probabilities in position order."""
  p = [float64_probability(logits[0, t], tokens[0, t]) for t in range(logits.shape[1])]
  return sorted((t for t in range(len(p)) if eligible[0, t]), key=lambda t: (-p[t], t))


def ours(logits, tokens):
  positions = jnp.arange(logits.shape[1], dtype=jnp.int32)
  return remasking.confidence(jnp.asarray(logits), jnp.asarray(tokens), "low_confidence", None, positions)


# Leads of 20-45 nats: float32 log p is 0 from about 24 on; float64 p is 1.0 from about 37 on, so the
# last positions tie in float64 too. Equal rows (positions 2 and 6) tie exactly.
LEADS = [31.0, 24.5, 28.0, 45.0, 20.0, 40.0, 28.0, 36.0, 42.0, 33.5, 22.0, 38.5]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_k_follows_float64_probabilities(seed):
  logits = confident_logits(LEADS, seed)
  logits[0, 6] = logits[0, 2]
  tokens = np.argmax(logits, axis=-1).astype(np.int32)
  eligible = np.ones(tokens.shape, bool)
  eligible[0, 9] = False
  conf = ours(logits, tokens)
  want = reference_order(logits, tokens, eligible)
  assert len({round(float64_probability(logits[0, t], tokens[0, t]), 20) for t in want}) < len(want)  # ties
  for k in range(1, len(want) + 1):
    chosen = np.asarray(remasking.select_top(conf, jnp.asarray(eligible), jnp.asarray([k])))[0]
    assert sorted(np.flatnonzero(chosen).tolist()) == sorted(want[:k]), k


def test_ranking_by_float32_log_probabilities_would_differ():
  # The cases above are ones float32 log p cannot order: most of them are exactly 0.
  logits = confident_logits(LEADS)
  tokens = np.argmax(logits, axis=-1)
  log_p = np.take_along_axis(np.asarray(jax.nn.log_softmax(jnp.asarray(logits))), tokens[..., None], -1)[0, :, 0]
  assert (log_p == 0).sum() >= 6
  by_log_p = sorted(range(len(LEADS)), key=lambda t: (-log_p[t], t))
  assert by_log_p != reference_order(logits, tokens, np.ones(tokens.shape, bool))


@pytest.mark.parametrize("threshold", [0.9, 1 - 1e-9, 1 - 1e-13, 1.0])
def test_threshold_rule_in_float64(threshold):
  logits = confident_logits(LEADS, seed=3)
  tokens = np.argmax(logits, axis=-1).astype(np.int32)
  eligible = np.ones(tokens.shape, bool)
  chosen = np.asarray(remasking.select_threshold(ours(logits, tokens), jnp.asarray(eligible), threshold))[0]
  order = reference_order(logits, tokens, eligible)
  p = {t: float64_probability(logits[0, t], tokens[0, t]) for t in order}
  want = {order[0]} | {t for t in order if p[t] >= threshold}
  assert set(np.flatnonzero(chosen).tolist()) == want


@pytest.mark.parametrize("factor", [1e-6, 1e-10, 1e-14])
def test_factor_rule_in_float64(factor):
  logits = confident_logits(LEADS, seed=4)
  tokens = np.argmax(logits, axis=-1).astype(np.int32)
  eligible = np.ones(tokens.shape, bool)
  chosen = np.asarray(remasking.select_factor(ours(logits, tokens), jnp.asarray(eligible), factor))[0]
  order = reference_order(logits, tokens, eligible)
  n = 0
  for k, t in enumerate(order, start=1):
    if k > 1 and float64_probability(logits[0, t], tokens[0, t]) < 1 - factor / (k + 1):
      break
    n = k
  assert set(np.flatnonzero(chosen).tolist()) == set(order[:n])


def test_sampled_tokens_far_from_the_argmax_rank_without_overflow():
  # With temperature a chosen token can trail the argmax by hundreds of nats: p underflows float32.
  logits = confident_logits([30.0, 30.0, 30.0])
  tokens = np.asarray([[0, 500, 7]], np.int32)  # the argmax, then two unlikely tokens
  logits[0, 2, 7] = -150.0
  conf = ours(logits, tokens)
  assert np.all(np.isfinite(np.asarray(conf.log_doubt)))
  chosen = [np.flatnonzero(np.asarray(remasking.select_top(conf, jnp.ones((1, 3), bool), jnp.asarray([k])))[0])
            .tolist() for k in (1, 2)]
  assert chosen == [[0], sorted(reference_order(logits, tokens, np.ones((1, 3), bool))[:2])]

"""Sampling at temperature > 0 draws from softmax(logits / T): a chi-square test on a tiny vocabulary."""

import numpy as np

from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from tests.diffusion import common

ROWS = 4000
VOCAB_LIMIT = 12
SUPPRESSED = (2,)
# Critical value of chi-square with 10 degrees of freedom (11 categories) at p = 0.001, from the
# table; a correct sampler fails this test once in a thousand seeds, and the seed is fixed.
CHI2_CRITICAL_DF10 = 29.588


def _expected(temperature):
  sample = common.text_sample([1, 7, 30, 31])
  logits = common.Oracle(sample, common.params()).logits([common.TOKENS.mask])[0, :VOCAB_LIMIT]
  logits[list(SUPPRESSED)] = -np.inf
  z = logits / temperature
  p = np.exp(z - z.max())
  return sample, p / p.sum()


def _chi2(counts, probs):
  keep = probs > 0
  expected = probs[keep] * counts.sum()
  return float(np.sum((counts[keep] - expected) ** 2 / expected))


def test_temperature_sampling_matches_the_categorical_distribution():
  temperature = 4.0
  sample, probs = _expected(temperature)
  assert (probs[probs > 0] * ROWS).min() >= 5 and (probs > 0).sum() == 11  # valid chi-square cells
  settings = SamplerSettings(gen_length=1, steps=1, block_length=1, temperature=temperature,
                             vocab_limit=VOCAB_LIMIT, suppressed_ids=SUPPRESSED, stop_sequences=())
  answers, _ = generate(common.MODEL, common.params(), [sample] * ROWS, settings, seed=7)
  draws = np.concatenate(answers)
  counts = np.bincount(draws, minlength=VOCAB_LIMIT)
  assert counts.shape == (VOCAB_LIMIT,)  # nothing at or above the vocabulary limit
  assert counts[list(SUPPRESSED)].sum() == 0
  assert _chi2(counts, probs) < CHI2_CRITICAL_DF10
  # The test has power: the same draws are far from the distribution at another temperature.
  _, other = _expected(2.0 * temperature)
  assert _chi2(counts, other) > 3 * CHI2_CRITICAL_DF10

"""The Monte-Carlo loss estimate and the greedy flag of upstream's lmms-eval `loglikelihood`, against a
float64 NumPy re-statement of upstream's estimator (`LLaDAModelLM.forward`: t per row, labels masked with
probability p, CE / p summed and divided by the number of labels, averaged over the draws) and of
`suffix_greedy_prediction` (`generate_with_embeds` committing one token per step).

The re-statement runs its own forward (tests/diffusion/numpy_llada.py) on embeddings: text rows from the
embedding table, image rows from the model's splice (which tests/parity checks against the torch towers).
"""

import dataclasses
import itertools

import jax
import numpy as np
import pytest

from lladav_jax import load_pretrained
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.diffusion.loss import MASK_EPS
from lladav_jax.eval import likelihood
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import collate
from lladav_jax.tokens import IGNORE_LABEL
from tests import tiny
from tests.diffusion import numpy_llada
from tests.eval import common

# With these words as single tokens the labels after " red" are 6 ids: all 2^6 masks can be enumerated.
SMALL_CORPUS = ["What is in the image?", "red", "assistant"]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
  root = common.make_checkpoint(tmp_path_factory.mktemp("small_vocab"), seed=1, corpus=SMALL_CORPUS, sharp=True)
  config, params = load_pretrained(root)
  return LLaDAV(config, ComputeConfig(scan_layers=True)), {"params": params}, Tokenizer.from_dir(root)


def _table(variables):
  return np.asarray(variables["params"]["language_model"]["embed_tokens"]["embedding"], np.float64)


def clean_embeddings(model, variables, sample) -> np.ndarray:
  """[T, D] float64 input embeddings of a sample."""
  embeds = _table(variables)[sample.input_ids]
  if sample.image_mask.any():
    batch = collate([[sample]], sample.length, sample.num_crops, model.config)
    spliced = model.apply(variables, batch["input_ids"], batch["image_mask"], batch["image_index"],
                          batch["image_weight"], batch["pixel_values"], method=LLaDAV.embed_inputs)
    embeds[sample.image_mask] = np.asarray(spliced, np.float64)[0][sample.image_mask]
  return embeds


def log_softmax(x):
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def numpy_tower(variables):
  """The language tower's parameters as float64 NumPy arrays (converted once: the forward indexes them)."""
  return jax.tree.map(lambda x: np.asarray(x, np.float64), variables["params"]["language_model"])


def np_logits(tower, model, embeds, vocab_limit):
  length = len(embeds)
  logits = numpy_llada.forward(tower, model.config.text, embeds, np.arange(length), np.ones(length, bool))
  return logits[:, :vocab_limit]


class Upstream:
  """Upstream's training forward on one row of prompt + continuation (labels after the prompt)."""

  def __init__(self, model, variables, sample, vocab_limit):
    self.model, self.tower, self.vocab_limit = model, numpy_tower(variables), vocab_limit
    self.clean = clean_embeddings(model, variables, sample)
    self.mask_row = _table(variables)[model.config.tokens.mask]
    self.ids, self.labels = sample.input_ids, sample.labels
    self.valid = self.labels != IGNORE_LABEL

  def draw(self, rng):
    """forward_process_embeds: t = rand(), masked = rand(l) < p on labels, plus every position whose
    embedding already is [MASK]'s."""
    p = (1 - MASK_EPS) * rng.random() + MASK_EPS
    masked = ((rng.random(len(self.ids)) < p) & self.valid) | (self.ids == self.model.config.tokens.mask)
    return masked, p

  def value(self, masked, p):
    """sum(CE / p over masked labels) / (number of labels), batch of one."""
    noisy = np.where(masked[:, None], self.mask_row, self.clean)
    logp = log_softmax(np_logits(self.tower, self.model, noisy, self.vocab_limit))
    ce = -logp[np.arange(len(noisy)), np.where(self.valid, self.labels, 0)]
    return float(np.sum(np.where(masked & self.valid, ce / p, 0.0)) / self.valid.sum())


def upstream_greedy(model, variables, prompt, size, vocab_limit):
  """suffix_greedy_prediction: generate_with_embeds with steps = gen_length = block_length = size."""
  tokens = model.config.tokens
  table, tower = _table(variables), numpy_tower(variables)
  canvas = np.concatenate([clean_embeddings(model, variables, prompt), np.repeat(table[None, tokens.mask], size, 0)])
  answer = [tokens.mask] * size
  for _ in range(size):  # one token per step (get_num_transfer_tokens(size, size))
    masked = np.array(answer) == tokens.mask  # positions found by their [MASK] embedding
    if not masked.any():
      break
    logits = np_logits(tower, model, canvas, vocab_limit)[prompt.length:].copy()
    for banned in (tokens.eos, tokens.bos, tokens.start_header, tokens.end_header):
      logits[masked, banned] = -np.inf
    x0 = logits.argmax(-1)
    probs = np.exp(log_softmax(logits))[np.arange(size), x0]
    j = max(np.flatnonzero(masked), key=lambda i: (probs[i], -i))  # top-1; ties: lower position
    answer[j] = int(x0[j])
    canvas[prompt.length + j] = table[x0[j]]
  return answer


@pytest.mark.parametrize("num_images,mc_num,batch_size_ppl", [(0, 8, 4), (2, 2, 1)])
def test_given_masks_the_values_equal_the_restatement(setup, num_images, mc_num, batch_size_ppl):
  model, variables, tokenizer = setup
  images = [tiny.random_image(24, 16, seed=1), tiny.random_image(16, 24, seed=2)][:num_images]
  scored = likelihood.scored_sample(tokenizer, model.config, "What is in the image?", " red", images)
  # The labels are every id after the prompt; several images take the evaluation layout (729 each).
  full = scored.full
  assert full.labels[-len(scored.target):].tolist() == list(scored.target)
  assert (full.labels[:-len(scored.target)] == IGNORE_LABEL).all()
  assert int(full.image_mask.sum()) == num_images * model.config.vision.num_patches
  estimator = likelihood.MonteCarloLoss(model, variables, mc_num=mc_num, batch_size_ppl=batch_size_ppl,
                                        vocab_limit=len(tokenizer))
  key = jax.random.key(7)
  drawn = estimator.draws(full, key)
  ours = estimator.values(full, key)
  masked = np.asarray(drawn.masked)[:, :full.length]
  p = np.asarray(drawn.p_mask)[:, 0]
  reference = Upstream(model, variables, full, len(tokenizer))
  expected = np.array([reference.value(masked[k], p[k]) for k in range(mc_num)])
  # float32 against float64 through a 2-layer tower: relative 2e-5.
  np.testing.assert_allclose(ours, expected, rtol=2e-5)
  np.testing.assert_array_equal(estimator.values(full, corruption=drawn), ours)
  # Upstream averages the per-forward batch means (mc_num / batch_size_ppl forwards).
  batch_means = np.mean([chunk.mean() for chunk in np.split(expected, mc_num // batch_size_ppl)])
  assert estimator.estimate(full, key) == pytest.approx(batch_means, rel=2e-5)


def test_draws_are_upstreams_forward_process(setup):
  model, variables, tokenizer = setup
  mask_id = model.config.tokens.mask
  scored = likelihood.scored_sample(tokenizer, model.config, "What is in the image?", "red <|mdm_mask|> green")
  full = scored.full
  assert mask_id in scored.target
  count = 2048
  estimator = likelihood.MonteCarloLoss(model, variables, mc_num=count, batch_size_ppl=64)
  drawn = estimator.draws(full, jax.random.key(3))
  masked, p_mask = np.asarray(drawn.masked), np.asarray(drawn.p_mask)
  labels = np.full(masked.shape[1], IGNORE_LABEL)
  labels[:full.length] = full.labels
  valid, already = labels != IGNORE_LABEL, labels == mask_id
  assert not masked[:, ~valid].any()  # prompt, image and padding positions stay clean
  assert masked[:, already].all()  # a label that already is [MASK] counts as masked
  p = p_mask[:, 0]
  assert (p_mask[:, :full.length] == p[:, None]).all()  # one p per row (per forward-pass row upstream)
  t = np.sort((p - MASK_EPS) / (1 - MASK_EPS))
  assert np.max(np.abs(t - (np.arange(count) + 0.5) / count)) < 1.8 / np.sqrt(count)  # t ~ U(0, 1) (KS, 99.7%)
  others = valid & ~already
  hits = masked[:, others].sum(1)
  trials = others.sum()
  z = (hits.sum() - trials * p.sum()) / np.sqrt(trials * np.sum(p * (1 - p)))
  assert abs(z) < 4.5  # each other label masked with probability p


def _beta_weight(k: int, n: int) -> float:
  """E over t of p^(k-1) (1-p)^(n-k), p = (1 - eps) t + eps: the weight of a k-label mask's CE sum."""
  poly = np.polynomial.Polynomial([0, 1]) ** (k - 1) * np.polynomial.Polynomial([1, -1]) ** (n - k)
  integral = poly.integ()
  return float((integral(1.0) - integral(MASK_EPS)) / (1 - MASK_EPS))


def test_estimate_agrees_with_the_exact_expectation(small):
  model, variables, tokenizer = small
  scored = likelihood.scored_sample(tokenizer, model.config, "What is in the image?", " red")
  full = scored.full
  n = len(scored.target)
  assert n <= 8
  reference = Upstream(model, variables, full, len(tokenizer))
  positions = np.flatnonzero(reference.valid)
  exact = 0.0
  for subset in itertools.product([False, True], repeat=n):
    if any(subset):
      masked = np.zeros(full.length, bool)
      masked[positions[list(subset)]] = True
      exact += reference.value(masked, 1.0) * _beta_weight(sum(subset), n)
  estimator = likelihood.MonteCarloLoss(model, variables, mc_num=1024, batch_size_ppl=256, vocab_limit=len(tokenizer))
  ours = estimator.values(full, jax.random.key(11))
  assert abs(ours.mean() - exact) < 5 * ours.std(ddof=1) / np.sqrt(len(ours))
  # Upstream's estimator with its own random draws lands there too.
  rng = np.random.default_rng(0)
  theirs = np.array([reference.value(*reference.draw(rng)) for _ in range(128)])
  assert abs(theirs.mean() - exact) < 5 * theirs.std(ddof=1) / np.sqrt(len(theirs))


def test_greedy_flag_is_suffix_greedy_prediction(small):
  model, variables, tokenizer = small
  scored = likelihood.scored_sample(tokenizer, model.config, "What is in the image?", " red")
  size, limit = len(scored.target), len(tokenizer)
  decoded = upstream_greedy(model, variables, scored.prompt, size, limit)
  # The labels end with the header ids of the repeated generation prompt, which the sampler never
  # produces at a masked position: with upstream's template the flag is always False.
  assert model.config.tokens.start_header in scored.target
  assert not likelihood.greedy_reproduces(model, variables, scored, vocab_limit=limit)
  assert likelihood.greedy_reproduces(model, variables, dataclasses.replace(scored, target=tuple(decoded)),
                                      vocab_limit=limit)
  changed = tuple([(decoded[0] + 1) % limit] + decoded[1:])
  assert not likelihood.greedy_reproduces(model, variables, dataclasses.replace(scored, target=changed),
                                          vocab_limit=limit)

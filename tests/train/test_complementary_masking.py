"""LaViDa's complementary masking: the second view masks exactly the supervised tokens the first left
clean, and the loss is the two views' Eq. 1 (weights 1 / p and 1 / (1 - p)) averaged, against NumPy."""

import jax
import numpy as np
import pytest

from lladav_jax.diffusion import loss as diffusion_loss
from lladav_jax.samples import model_inputs
from lladav_jax.tokens import IGNORE_LABEL
from lladav_jax.train import loop
from lladav_jax.train.state import with_params
from lladav_jax.train.step import step_inputs
from tests.train import common
from tests.train.test_loss import VOCAB, log_softmax64
from tests.train.test_step import batches_for, initial_params

MASK = VOCAB - 1
# Two rows: row 0 one sample (2 prompt tokens, 5 supervised, 1 padding); row 1 two packed samples,
# one of whose targets already is [MASK] in the data.
LABELS = np.array([[-1, -1, 3, 4, 5, 6, 7, -1],
                   [-1, 2, 8, MASK, -1, 9, 10, 11]]).astype(np.int32)
LABELS[LABELS == -1] = IGNORE_LABEL
SEGMENTS = np.array([[1, 1, 1, 1, 1, 1, 1, 0],
                     [1, 1, 1, 1, 2, 2, 2, 2]], np.int32)
INPUT_IDS = np.where(LABELS == IGNORE_LABEL, 1, LABELS).astype(np.int32)


def numpy_complementary_loss(logits1, logits2, labels, segments, masked1, p):
  """Per sample: (sum over view-1 masked CE / p + sum over its complement's CE / (1 - p)) / n_s,
  summed over samples and divided by twice the number of samples."""
  logp1, logp2 = log_softmax64(logits1), log_softmax64(logits2)
  total, samples = 0.0, 0
  for b in range(labels.shape[0]):
    for seg in sorted(set(segments[b].tolist()) - {0}):
      supervised = [i for i in np.flatnonzero(segments[b] == seg) if labels[b, i] != IGNORE_LABEL]
      first = sum(-logp1[b, i, labels[b, i]] / p[b, i] for i in supervised if masked1[b, i])
      second = sum(-logp2[b, i, labels[b, i]] / (1.0 - p[b, i]) for i in supervised if not masked1[b, i])
      total += (first + second) / len(supervised)
      samples += 1
  return total / (2 * samples)


def views(seed):
  noisy, first = diffusion_loss.corrupt(jax.random.key(seed), INPUT_IDS, LABELS, SEGMENTS, mask_id=MASK,
                                        eps=1e-3, max_p=1 - 1e-3)
  noisy2, second = diffusion_loss.complement(INPUT_IDS, LABELS, SEGMENTS, first, mask_id=MASK)
  return (np.asarray(noisy), first), (np.asarray(noisy2), second)


def test_every_supervised_token_is_masked_in_exactly_one_view():
  supervised = (LABELS != IGNORE_LABEL) & (SEGMENTS > 0)
  for seed in range(20):
    (noisy1, first), (noisy2, second) = views(seed)
    m1, m2 = np.asarray(first.masked), np.asarray(second.masked)
    np.testing.assert_array_equal(m1 ^ m2, supervised)
    assert not (m1 & m2).any()
    np.testing.assert_array_equal(noisy2 == MASK, m2 | (INPUT_IDS == MASK))
    np.testing.assert_array_equal(noisy1 == MASK, m1)
    np.testing.assert_allclose(np.asarray(second.p_mask), 1 - np.asarray(first.p_mask), rtol=1e-6)
    p = np.asarray(first.p_mask)[SEGMENTS > 0]
    assert (p >= 1e-3).all() and (p <= 1 - 1e-3 + 1e-7).all()


def test_loss_of_both_views_equals_the_numpy_restatement():
  rng = np.random.default_rng(0)
  for seed in range(5):
    (_, first), (_, second) = views(seed)
    logits1 = rng.normal(0, 2, LABELS.shape + (VOCAB,)).astype(np.float32)
    logits2 = rng.normal(0, 2, LABELS.shape + (VOCAB,)).astype(np.float32)
    both = diffusion_loss.Corruption(masked=np.concatenate([first.masked, second.masked]),
                                     p_mask=np.concatenate([first.p_mask, second.p_mask]))
    numerator, _ = diffusion_loss.diffusion_loss_terms(
        np.concatenate([logits1, logits2]), np.concatenate([LABELS, LABELS]), np.concatenate([SEGMENTS, SEGMENTS]),
        both)
    loss = float(numerator) / (2 * int(diffusion_loss.num_samples(SEGMENTS)))
    expected = numpy_complementary_loss(logits1, logits2, LABELS, SEGMENTS, np.asarray(first.masked),
                                        np.asarray(first.p_mask))
    np.testing.assert_allclose(loss, expected, rtol=1e-5)


@pytest.mark.slow
def test_train_step_loss_is_the_two_views_on_the_models_logits():
  config = common.run_config(complementary_masking=True)
  config.optim.update(dict(lr=1e-3, vision_lr=1e-3, warmup_ratio=0.0))
  plan = loop.setup(config, 10, devices=jax.devices()[:1])
  state = with_params(plan.state_shardings, jax.device_put(initial_params()), plan.tx, config.seed)
  host = next(batches_for(config))
  params = jax.device_get(state.params)
  key = jax.random.wrap_key_data(jax.device_get(state.rng))
  _, metrics = plan.train_step(state, step_inputs(host, dialogue_causal=False))

  mask_id = config.model.tokens.mask
  noisy, first = diffusion_loss.corrupt(jax.random.fold_in(key, 0), host["input_ids"], host["labels"],
                                        host["segment_ids"], mask_id=mask_id, eps=config.train.mask_eps,
                                        max_p=1 - config.train.mask_eps)
  noisy2, _ = diffusion_loss.complement(host["input_ids"], host["labels"], host["segment_ids"], first,
                                        mask_id=mask_id)
  apply = jax.jit(plan.model.apply)
  view_logits = [np.asarray(apply({"params": params}, **model_inputs(dict(host, input_ids=np.asarray(ids)),
                                                                     dialogue_causal=False)))
                 for ids in (noisy, noisy2)]
  expected = numpy_complementary_loss(*view_logits, host["labels"], host["segment_ids"], np.asarray(first.masked),
                                      np.asarray(first.p_mask))
  supervised = int(((host["labels"] != IGNORE_LABEL) & (host["segment_ids"] > 0)).sum())
  assert int(metrics["masked_tokens"]) == int(metrics["supervised_tokens"]) // 2 == supervised
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)

"""The masked-diffusion loss against NumPy transcriptions of upstream's formula, and the corruption."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lladav_jax.diffusion import loss as diffusion_loss
from lladav_jax.tokens import IGNORE_LABEL

VOCAB = 17


def log_softmax64(logits):
  x = np.asarray(logits, np.float64)
  x = x - x.max(-1, keepdims=True)
  return x - np.log(np.exp(x).sum(-1, keepdims=True))


def upstream_formula(logits, labels, masked, p_mask):
  """LLaDAModelLM.forward's loss, vectorised as upstream writes it (one sample per row)."""
  logp = log_softmax64(logits)
  rows, cols = np.nonzero(masked)
  ce = -logp[rows, cols, labels[rows, cols]]
  noisy_data_length = (labels != IGNORE_LABEL).sum(-1, keepdims=True).repeat(labels.shape[1], 1)
  token_loss = ce / p_mask[rows, cols]
  return np.sum(token_loss / noisy_data_length[rows, cols]) / labels.shape[0]


def per_sample_reference(logits, labels, segment_ids, masked, p_mask):
  """Eq. 1 per sample, each packed segment a sample: sum(CE / p) / n_sample, averaged over samples."""
  logp = log_softmax64(logits)
  total, samples = 0.0, 0
  for b in range(labels.shape[0]):
    for seg in sorted(set(segment_ids[b].tolist()) - {0}):
      idx = np.flatnonzero(segment_ids[b] == seg)
      supervised = [i for i in idx if labels[b, i] != IGNORE_LABEL]
      loss = sum(-logp[b, i, labels[b, i]] / p_mask[b, i] for i in supervised if masked[b, i])
      total += loss / max(len(supervised), 1)
      samples += 1
  return total / samples


def random_case(seed, rows=4, length=24, packed=False):
  rng = np.random.default_rng(seed)
  logits = rng.normal(0, 3, (rows, length, VOCAB)).astype(np.float32)
  labels = np.full((rows, length), IGNORE_LABEL, np.int32)
  segment_ids = np.zeros((rows, length), np.int32)
  for b in range(rows):
    starts = [0, 9] if packed and b % 2 else [0]
    end = length - 3 * (b % 3)  # some rows end in padding
    bounds = starts + [end]
    for seg, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:]), start=1):
      segment_ids[b, lo:hi] = seg
      prompt = rng.integers(1, 4)
      labels[b, lo + prompt:hi] = rng.integers(0, VOCAB, hi - lo - prompt)
  supervised = labels != IGNORE_LABEL
  masked = supervised & (rng.random((rows, length)) < 0.5)
  p_mask = np.repeat(rng.uniform(1e-3, 1, (rows, 1)), length, 1).astype(np.float32)
  if packed:  # each segment its own p
    p_mask = np.where(segment_ids == 2, p_mask * 0.5, p_mask).astype(np.float32)
  return logits, labels, segment_ids, masked, p_mask


def jax_loss(logits, labels, segment_ids, masked, p_mask):
  corruption = diffusion_loss.Corruption(masked=jnp.asarray(masked), p_mask=jnp.asarray(p_mask))
  numerator, _ = diffusion_loss.diffusion_loss_terms(jnp.asarray(logits), jnp.asarray(labels), jnp.asarray(segment_ids),
                                                     corruption)
  return float(numerator / diffusion_loss.num_samples(jnp.asarray(segment_ids)))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_loss_matches_upstream_formula_one_sample_per_row(seed):
  logits, labels, segment_ids, masked, p_mask = random_case(seed)
  ours = jax_loss(logits, labels, segment_ids, masked, p_mask)
  # float32 log-softmax vs float64: relative 1e-5 covers the rounding of ~50 terms.
  np.testing.assert_allclose(ours, upstream_formula(logits, labels, masked, p_mask), rtol=1e-5)
  np.testing.assert_allclose(ours, per_sample_reference(logits, labels, segment_ids, masked, p_mask), rtol=1e-5)


def test_packed_rows_normalise_per_sample():
  logits, labels, segment_ids, masked, p_mask = random_case(3, packed=True)
  assert (segment_ids == 2).any()
  ours = jax_loss(logits, labels, segment_ids, masked, p_mask)
  np.testing.assert_allclose(ours, per_sample_reference(logits, labels, segment_ids, masked, p_mask), rtol=1e-5)


def test_loss_ignores_unmasked_tokens_and_padding_logits():
  logits, labels, segment_ids, masked, p_mask = random_case(4)
  base = jax_loss(logits, labels, segment_ids, masked, p_mask)
  changed = logits.copy()
  changed[~masked] = 1e4 * np.sign(changed[~masked])  # unmasked positions must not matter at all
  assert jax_loss(changed, labels, segment_ids, masked, p_mask) == pytest.approx(base, rel=1e-6)


def corrupt_case(rows=512, length=48, seed=0):
  rng = np.random.default_rng(seed)
  input_ids = rng.integers(0, 50, (rows, length)).astype(np.int32)
  labels = np.where(np.arange(length) >= 8, input_ids, IGNORE_LABEL).astype(np.int32)
  segment_ids = np.ones((rows, length), np.int32)
  segment_ids[::2, 24:] = 2  # even rows: two packed samples
  segment_ids[:, -4:] = 0  # padding
  labels[:, -4:] = IGNORE_LABEL
  return input_ids, labels, segment_ids


def test_corruption_follows_the_schedule():
  input_ids, labels, segment_ids = corrupt_case()
  noisy, c = diffusion_loss.corrupt(jax.random.key(0), jnp.asarray(input_ids), jnp.asarray(labels),
                                    jnp.asarray(segment_ids), mask_id=99, eps=1e-3)
  noisy, masked, p = np.asarray(noisy), np.asarray(c.masked), np.asarray(c.p_mask)
  supervised = (labels != IGNORE_LABEL) & (segment_ids > 0)
  assert not masked[~supervised].any(), "prompt and padding must stay clean"
  np.testing.assert_array_equal(noisy, np.where(masked, 99, input_ids))
  assert p.min() >= 1e-3 and p.max() <= 1.0
  for b in range(len(p)):  # one p per sample
    for seg in set(segment_ids[b].tolist()) - {0}:
      assert np.ptp(p[b][segment_ids[b] == seg]) == 0.0
  even = np.arange(0, len(p), 2)
  assert not np.allclose(p[even, 0], p[even, 30]), "packed samples draw their own t"
  # P(masked | p) = p: the mean of (masked - p) over supervised tokens is 0 within 5 standard errors.
  diff = (masked.astype(np.float64) - p)[supervised]
  assert abs(diff.mean()) < 5 * np.sqrt((p * (1 - p))[supervised].mean() / diff.size)
  # t ~ U(0, 1): p's mean over samples is ~0.5.
  assert abs(p[:, 0].mean() - 0.5) < 5 * np.sqrt(1 / 12 / len(p))


def test_corruption_is_a_function_of_the_key():
  input_ids, labels, segment_ids = map(jnp.asarray, corrupt_case(rows=8))
  draw = lambda key: np.asarray(diffusion_loss.corrupt(key, input_ids, labels, segment_ids, mask_id=99)[1].masked)
  key = jax.random.key(3)
  np.testing.assert_array_equal(draw(jax.random.fold_in(key, 7)), draw(jax.random.fold_in(key, 7)))
  assert (draw(jax.random.fold_in(key, 7)) != draw(jax.random.fold_in(key, 8))).any()


def test_a_supervised_mask_token_counts_as_masked_like_upstream():
  input_ids, labels, segment_ids = corrupt_case(rows=64)
  input_ids[:, 20] = 99  # a response token that already is [MASK]
  labels[:, 20] = 99
  _, c = diffusion_loss.corrupt(jax.random.key(1), *map(jnp.asarray, (input_ids, labels, segment_ids)), mask_id=99)
  assert np.asarray(c.masked)[:, 20].all()


def head_case(seed, width=8):
  """A random case whose logits come from hidden states [B, L, D] and a head kernel [D, V]."""
  _, labels, segment_ids, masked, p_mask = random_case(seed, packed=True)
  rng = np.random.default_rng(seed + 100)
  hidden = jnp.asarray(rng.normal(0, 1, labels.shape + (width,)), jnp.float32)
  kernel = jnp.asarray(rng.normal(0, 1, (width, VOCAB)), jnp.float32)
  corruption = diffusion_loss.Corruption(masked=jnp.asarray(masked), p_mask=jnp.asarray(p_mask))
  return hidden, kernel, jnp.asarray(labels), jnp.asarray(segment_ids), corruption


def unchunked_numerator(hidden, kernel, labels, segment_ids, corruption):
  return diffusion_loss.diffusion_loss_terms(hidden @ kernel, labels, segment_ids, corruption)[0]


def chunked_numerator(hidden, kernel, labels, segment_ids, corruption, chunk):
  return diffusion_loss.chunked_diffusion_loss_terms(hidden, lambda h: h @ kernel, labels, segment_ids, corruption,
                                                     chunk=chunk)[0]


@pytest.mark.parametrize("chunk", [1, 5, 8, 64], ids=["chunk1", "chunk5", "chunk8", "one_chunk"])
def test_chunked_loss_and_gradients_equal_the_full_logits_loss(chunk):
  hidden, kernel, labels, segment_ids, corruption = head_case(5)
  want, want_grads = jax.value_and_grad(unchunked_numerator, argnums=(0, 1))(hidden, kernel, labels, segment_ids,
                                                                              corruption)
  got, got_grads = jax.jit(jax.value_and_grad(chunked_numerator, argnums=(0, 1)), static_argnums=5)(
      hidden, kernel, labels, segment_ids, corruption, chunk)
  # Another summation order of the same float32 terms (the masked tokens are moved to the front).
  np.testing.assert_allclose(float(got), float(want), rtol=1e-6)
  for got_grad, want_grad in zip(got_grads, want_grads):
    np.testing.assert_allclose(np.asarray(got_grad), np.asarray(want_grad), atol=1e-6)
  assert np.abs(np.asarray(want_grads[0])).max() > 1e-2  # the gradients are not trivially zero


def test_chunked_loss_runs_the_head_only_on_chunks_with_masked_tokens():
  hidden, kernel, labels, segment_ids, corruption = head_case(6)
  calls = []

  def head(h):
    jax.debug.callback(lambda: calls.append(1))
    return h @ kernel

  chunk = 3
  diffusion_loss.chunked_diffusion_loss_terms(hidden, head, labels, segment_ids, corruption, chunk=chunk)
  masked = np.asarray(corruption.masked & diffusion_loss.supervised_mask(labels, segment_ids))
  needed = -(-masked.sum(axis=1).max() // chunk)  # the most masked tokens of any row, in chunks
  assert len(calls) == needed < -(-labels.shape[1] // chunk)


def test_chunked_loss_compiles_to_less_memory_than_the_logits():
  """The CPU compiler's buffer assignment: the full loss needs more than half the float32 logits
  [B, L, V], the chunked one less (one chunk's logits is 1/16 of them)."""
  rows, length, width, vocab = 2, 1024, 64, 4096
  spec = jax.ShapeDtypeStruct
  args = (spec((rows, length, width), jnp.float32), spec((width, vocab), jnp.float32),
          spec((rows, length), jnp.int32), spec((rows, length), jnp.int32),
          diffusion_loss.Corruption(masked=spec((rows, length), jnp.bool_), p_mask=spec((rows, length), jnp.float32)))

  def temporaries(numerator):
    compiled = jax.jit(jax.grad(numerator, argnums=(0, 1))).lower(*args).compile()
    return compiled.memory_analysis().temp_size_in_bytes

  bound = rows * length * vocab * 4 // 2
  assert temporaries(unchunked_numerator) > bound
  assert temporaries(lambda *a: chunked_numerator(*a, chunk=length // 16)) < bound

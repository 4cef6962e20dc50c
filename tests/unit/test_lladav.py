"""Properties of the composed model: packing, padding, masks, remat and scan change nothing."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lladav_jax.images.crops import sample_visuals
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import build_sample, collate, model_inputs
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID as IMG
from tests import tiny

CONFIG = tiny.LLADAV
ATOL = 1e-5


def _sample(ids, sizes, turns=None):
  images = [tiny.random_image(w, h, seed=w * 3 + h) for w, h in sizes]
  return build_sample(ids, sample_visuals(images, CONFIG), CONFIG, turn_ids=turns)


@functools.lru_cache(maxsize=None)
def _params(scan=True):
  batch = collate([[_sample([1, IMG, 2], [(384, 384)])]], 1500, 2, CONFIG)
  model = LLaDAV(CONFIG, dataclasses.replace(tiny.F32, scan_layers=scan))
  return nn.unbox(model.init(jax.random.key(0), **model_inputs(batch)))


def _logits(batch, compute=tiny.F32, params=None, dialogue_causal=False):
  model = LLaDAV(CONFIG, compute)
  params = _params(compute.scan_layers) if params is None else params
  return np.asarray(jax.jit(model.apply)(params, **model_inputs(batch, dialogue_causal=dialogue_causal)))


def test_packed_segments_equal_separate_rows():
  a = _sample([4, IMG, 5, 6], [(640, 360)])
  b = _sample([7, 8, IMG, 9], [(300, 500)])
  packed = _logits(collate([[a, b]], a.length + b.length + 5, 6, CONFIG))
  alone = _logits(collate([[a], [b]], max(a.length, b.length), 3, CONFIG))
  np.testing.assert_allclose(packed[0, :a.length], alone[0, :a.length], atol=ATOL)
  np.testing.assert_allclose(packed[0, a.length:a.length + b.length], alone[1, :b.length], atol=ATOL)


def test_padding_tokens_and_crops_change_nothing():
  a = _sample([4, IMG, 5], [(384, 384)])
  tight = _logits(collate([[a]], a.length, a.num_crops, CONFIG))
  padded = _logits(collate([[a]], a.length + 33, a.num_crops + 3, CONFIG))
  np.testing.assert_allclose(padded[0, :a.length], tight[0], atol=ATOL)


def test_dialogue_causal_mask_hides_later_turns():
  ids = [4, IMG, 5, 6, 7, 8]
  turns = [0, 0, 0, 1, 1, 1]
  base = _sample(ids, [(384, 384)], turns)
  edited = _sample(ids[:-1] + [9], [(384, 384)], turns)  # change a turn-1 token
  first_turn = base.length - 3
  for causal in (True, False):
    out = [_logits(collate([[s]], s.length, 2, CONFIG), dialogue_causal=causal)[0] for s in (base, edited)]
    diff = np.abs(out[0][:first_turn] - out[1][:first_turn]).max()
    # Without the mask the edit reaches turn 0: ten times the tolerance that hides it with the mask.
    assert (diff < ATOL) if causal else (diff > 10 * ATOL)


@pytest.mark.parametrize("policy", ["full", pytest.param("minimal", marks=pytest.mark.slow),
                                    pytest.param("save_attention", marks=pytest.mark.slow)])
def test_remat_and_loop_give_the_same_loss_and_gradients(policy):
  a = _sample([4, IMG, 5], [(384, 384)])
  batch = collate([[a]], a.length, 2, CONFIG)
  params = _params(True)

  def loss_fn(compute, params):
    logits = LLaDAV(CONFIG, compute).apply(params, **model_inputs(batch))
    return jnp.mean(jax.nn.logsumexp(logits, axis=-1))

  ref_loss, ref_grads = jax.jit(jax.value_and_grad(functools.partial(loss_fn, tiny.F32)))(params)
  loss, grads = jax.jit(jax.value_and_grad(
      functools.partial(loss_fn, dataclasses.replace(tiny.F32, remat_policy=policy))))(params)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-6)
  jax.tree_util.tree_map(lambda g, r: np.testing.assert_allclose(g, r, atol=1e-6), grads, ref_grads)


def test_scan_and_loop_layouts_compute_the_same_model():
  a = _sample([4, IMG, 5], [(384, 384)])
  batch = collate([[a]], a.length, 2, CONFIG)
  scanned = _params(True)["params"]
  # Unstack the scanned layer params into layers_0..layers_N.
  def unstack(tree):
    out = {}
    for key, value in tree.items():
      if key == "layers":
        n = jax.tree_util.tree_leaves(value)[0].shape[0]
        for i in range(n):
          out[f"layers_{i}"] = jax.tree_util.tree_map(lambda x: x[i], value)
      elif isinstance(value, dict):
        out[key] = unstack(value)
      else:
        out[key] = value
    return out
  looped = {"params": unstack(scanned)}
  np.testing.assert_allclose(_logits(batch, tiny.F32_LOOP, looped), _logits(batch), atol=ATOL)


def test_text_only_batch_needs_no_crops():
  a = build_sample([4, 5, 6], [], CONFIG)
  batch = collate([[a]], 8, 0, CONFIG)
  assert batch["pixel_values"].shape[1] == 0
  out = _logits(batch)
  with_crops = _logits(collate([[a]], 8, 1, CONFIG))
  np.testing.assert_allclose(out[0, :3], with_crops[0, :3], atol=ATOL)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_compute_stays_close_to_float32(dtype):
  a = _sample([4, IMG, 5], [(384, 384)])
  batch = collate([[a]], a.length, 2, CONFIG)
  full = _logits(batch)
  half = _logits(batch, dataclasses.replace(tiny.F32, dtype=dtype, param_dtype=dtype))
  scale = np.abs(full).max()
  assert np.abs(half - full).max() < 0.05 * scale


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_lm_head_gives_float32_logits_in_half_precision(dtype):
  """The head's products are summed and returned in float32, as upstream's autocast gives float32
  logits: rounding them to the compute dtype would cost 3 (float16) to 8 (bfloat16) bits."""
  compute = dataclasses.replace(tiny.F32, dtype=dtype, param_dtype=dtype)
  model = LLaDAV(CONFIG, compute)
  params = jax.tree_util.tree_map(lambda x: x.astype(dtype), _params(True))
  hidden = jax.random.normal(jax.random.key(3), (1, 6, CONFIG.text.hidden_size), dtype)
  logits = model.apply(params, hidden, method=lambda m, h: m.language_model.logits(h))
  assert logits.dtype == jnp.float32
  kernel = np.asarray(params["params"]["language_model"]["lm_head"]["kernel"], np.float64)
  exact = np.asarray(hidden, np.float64) @ kernel
  np.testing.assert_allclose(np.asarray(logits), exact, rtol=1e-5, atol=1e-5 * np.abs(exact).max())


def _implementation_batch():
  a = _sample([4, IMG, 5, 6], [(384, 384)], [0, 0, 0, 1])
  b = build_sample([7, 8, 9], [], CONFIG, turn_ids=[0, 1, 1])
  return collate([[a, b], [b]], a.length + b.length + 7, 2, CONFIG)


@functools.lru_cache(maxsize=None)
def _logits_and_grads(impl, dialogue_causal):
  """Logits and the gradients of a loss over the real positions' log-probabilities."""
  batch = _implementation_batch()
  valid = batch["segment_ids"] > 0

  def loss_fn(params):
    logits = LLaDAV(CONFIG, dataclasses.replace(tiny.F32, attention_impl=impl)).apply(
        params, **model_inputs(batch, dialogue_causal=dialogue_causal))
    return jnp.sum(jnp.where(valid[..., None], jax.nn.log_softmax(logits, axis=-1), 0.0)[..., :5]), logits

  (_, logits), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(_params(True))
  return np.asarray(logits), jax.device_get(grads)


@pytest.mark.parametrize("impl,dialogue_causal", [
    ("blockwise", False), pytest.param("blockwise", True, marks=pytest.mark.slow), ("chunked", False),
    ("splash", False)])
def test_attention_implementations_give_the_plain_logits_and_gradients(impl, dialogue_causal):
  """Both towers (729-token crops without a mask, packed and padded text rows) against "xla"."""
  want_logits, want_grads = _logits_and_grads("xla", dialogue_causal)
  got_logits, got_grads = _logits_and_grads(impl, dialogue_causal)
  np.testing.assert_allclose(got_logits, want_logits, atol=ATOL)
  # float32 through 3 vision and 2 language layers: measured gradient differences are below 1e-6 of
  # each parameter's largest gradient (up to 1e2 here), and below 1e-6 where gradients are ~0.
  check = lambda g, r: np.testing.assert_allclose(g, r, atol=1e-5 * max(float(np.abs(r).max()), 1.0))
  jax.tree_util.tree_map(check, got_grads, want_grads)

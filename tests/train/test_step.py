"""The jitted train step on one device: loss wiring, accumulation, freezing, non-finite steps."""

import functools

import jax
import numpy as np
import pytest
from flax import traverse_util

from lladav_jax import run_config
from lladav_jax.diffusion import loss as diffusion_loss
from lladav_jax.samples import model_inputs
from lladav_jax.train import loop
from lladav_jax.train.host_batches import ShardedBatches, SyntheticSource
from lladav_jax.train.state import with_params
from lladav_jax.train.step import step_inputs
from tests.train import common
from tests.train.test_loss import per_sample_reference


def batches_for(config):
  source = SyntheticSource(run_config.model_config(config), num_examples=64, seed=1, image_fraction=0.5)
  return ShardedBatches(source, global_batch=config.train.global_batch_size,
                        rows=(0, config.train.global_batch_size), seq_len=config.train.synthetic.seq_len,
                        max_crops=config.train.synthetic.max_crops)


@functools.lru_cache(maxsize=None)
def cached_plan(micro_batches=1, dialogue_causal=False, trainable=("vision", "projector", "language"), lr=1e-3,
                compute=()):
  """Plans (and their compiled steps) are shared between tests: compiling dominates their time.
  `compute`: (field, value) pairs over the config's compute section."""
  config = common.run_config(micro_batches=micro_batches, dialogue_causal=dialogue_causal)
  config.optim.update(dict(trainable=trainable, lr=lr, vision_lr=lr, warmup_ratio=0.0))
  config.compute.update(dict(compute))
  return config, loop.setup(config, 10, devices=jax.devices()[:1])


@functools.lru_cache(maxsize=None)
def initial_params():
  return jax.device_get(cached_plan()[1].init().params)


def setup(**options):
  """(plan, batches, fresh state): every plan starts from the same random params."""
  config, plan = cached_plan(**options)
  state = with_params(plan.state_shardings, jax.device_put(initial_params()), plan.tx, config.seed)
  return plan, batches_for(config), state


def run_step(plan, state, host, dialogue_causal=False):
  return plan.train_step(state, step_inputs(host, dialogue_causal=dialogue_causal))


@pytest.mark.parametrize("dialogue_causal", [False, pytest.param(True, marks=pytest.mark.slow)],
                         ids=["bidirectional", "dialogue_causal"])
def test_step_loss_is_eq1_on_the_models_logits(dialogue_causal):
  plan, batches, state = setup(dialogue_causal=dialogue_causal)
  next(batches)
  host = next(batches)  # step 1, so the masks must come from fold_in(rng, 1)
  state = state.replace(step=state.step + 1)
  params = jax.device_get(state.params)
  key = jax.random.wrap_key_data(jax.device_get(state.rng))
  _, metrics = run_step(plan, state, host, dialogue_causal)

  noisy, c = diffusion_loss.corrupt(jax.random.fold_in(key, 1), host["input_ids"], host["labels"],
                                    host["segment_ids"], mask_id=common.run_config().model.tokens.mask)
  inputs = model_inputs(dict(host, input_ids=np.asarray(noisy)), dialogue_causal=dialogue_causal)
  logits = jax.jit(plan.model.apply)({"params": params}, **inputs)
  expected = per_sample_reference(np.asarray(logits), host["labels"], host["segment_ids"], np.asarray(c.masked),
                                  np.asarray(c.p_mask))
  assert int(metrics["masked_tokens"]) == int(np.asarray(c.masked).sum()) > 0
  # Same float32 forward on both sides; the reference sums in float64.
  np.testing.assert_allclose(float(metrics["loss"]), expected, rtol=1e-5)
  assert host["image_mask"].any(), "the batch should exercise the vision path"


def first_update(micro_batches, compute=()):
  plan, batches, state = setup(micro_batches=micro_batches, compute=compute)
  state, metrics = run_step(plan, state, next(batches))
  return jax.device_get(state), jax.device_get(metrics)


def adam_moments(opt_state):
  """{(component, 'mu'|'nu', path): array} of the Adam states."""
  out = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(opt_state)[0]:
    keys = [getattr(k, "key", getattr(k, "name", None)) for k in path]
    if "mu" in keys or "nu" in keys:
      out[tuple(map(str, keys))] = np.asarray(leaf)
  return out


def assert_same_update(state, metrics, reference_state, reference_metrics):
  """Same terms summed in another order: float32 rounding only."""
  np.testing.assert_allclose(metrics["loss"], reference_metrics["loss"], rtol=1e-5)
  np.testing.assert_allclose(metrics["grad_norm"], reference_metrics["grad_norm"], rtol=1e-4)
  reference, moments = adam_moments(reference_state.opt_state), adam_moments(state.opt_state)
  assert reference and moments.keys() == reference.keys()
  # mu = (1 - b1) g, nu = (1 - b2) g^2 of the clipped gradient. Some gradients are exactly zero in
  # theory (key biases: softmax ignores them) and rounding noise in practice, hence an absolute
  # floor relative to the largest entry of the same moment.
  scale = {kind: max(np.abs(v).max() for k, v in reference.items() if kind in k) for kind in ("mu", "nu")}
  for k in reference:
    atol = 1e-5 * scale["mu" if "mu" in k else "nu"]
    np.testing.assert_allclose(moments[k], reference[k], rtol=1e-4, atol=atol, err_msg=str(k))


@pytest.mark.slow
def test_gradient_accumulation_does_not_change_the_update():
  reference = first_update(1)
  for micro_batches in (2, 4):
    assert_same_update(*first_update(micro_batches), *reference)


# The plain path: the [L, L] scores and full [B, L, V] logits.
PLAIN = (("attention_impl", "xla"), ("loss_chunk", 0))


@pytest.mark.parametrize("compute", [
    (("attention_impl", "blockwise"), ("loss_chunk", 0)),
    (("attention_impl", "xla"), ("loss_chunk", 16)),
    pytest.param((("attention_impl", "splash"), ("loss_chunk", 24)), marks=pytest.mark.slow),
], ids=["blockwise", "chunked_loss", "splash_chunked_loss"])
def test_attention_and_loss_implementations_do_not_change_the_update(compute):
  assert_same_update(*first_update(1, compute), *first_update(1, PLAIN))


def test_stage1_trains_only_the_projector():
  plan, batches, state = setup(trainable=("projector",), lr=1e-2)
  before = traverse_util.flatten_dict(jax.device_get(state.params))
  for _ in range(2):
    state, _ = run_step(plan, state, next(batches))
  after = traverse_util.flatten_dict(jax.device_get(state.params))
  for k in before:
    if k[0] == "mm_projector":
      assert not np.array_equal(before[k], after[k]), k
    else:
      np.testing.assert_array_equal(before[k], after[k], err_msg="/".join(k))
  projector_shapes = [v.shape for k, v in before.items() if k[0] == "mm_projector"]
  moments = [v.shape for v in jax.tree.leaves(state.opt_state) if np.ndim(v) > 0]
  assert sorted(moments) == sorted(projector_shapes * 2)


def test_a_non_finite_step_is_skipped_and_counted():
  plan, batches, state = setup()
  params = state.params
  head = params["language_model"]["lm_head"]["kernel"]
  params["language_model"]["lm_head"]["kernel"] = head.at[0, 0].set(np.nan)
  state = state.replace(params=params)
  before = jax.device_get(state)
  for expected in (1, 2):
    state, metrics = run_step(plan, state, next(batches))
    assert not bool(metrics["finite"])
    assert int(metrics["skipped_steps"]) == expected and int(metrics["consecutive_skips"]) == expected
  after = jax.device_get(state)
  assert int(after.step) == 2
  for a, b in zip(jax.tree.leaves(before.params) + jax.tree.leaves(before.opt_state),
                  jax.tree.leaves(after.params) + jax.tree.leaves(after.opt_state)):
    np.testing.assert_array_equal(a, b)


@pytest.mark.slow  # a plan of its own (compiling is what takes time)
def test_the_loop_aborts_after_too_many_non_finite_steps(tmp_path):
  # A huge learning rate blows the params up on the first update; every later step is non-finite.
  config = common.run_config(num_steps=8, max_consecutive_skips=2)
  config.optim.update(dict(lr=1e30, vision_lr=1e30, warmup_ratio=0.0))
  with pytest.raises(loop.TrainingDiverged, match="2 steps in a row"):
    loop.train(config, str(tmp_path))

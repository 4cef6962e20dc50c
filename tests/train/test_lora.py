"""LoRA: fresh adapters leave the base model's logits unchanged, merged kernels equal base + adapters,
and training touches (and keeps optimiser state for) the adapters only."""

import dataclasses
import functools

import jax
import numpy as np
import pytest
from flax import traverse_util

from lladav_jax import run_config
from lladav_jax.convert.peft_export import merge
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.models.lora import LoraConfig, is_adapter
from lladav_jax.samples import model_inputs
from lladav_jax.train import adapters, loop
from lladav_jax.train.state import with_params
from lladav_jax.train.step import step_inputs
from tests import tiny
from tests.train import common
from tests.train.test_step import batches_for

MODEL = run_config.model_config(common.run_config())
LORA = LoraConfig(rank=4, alpha=8.0, projector=True, vision_targets=("q_proj", "fc2"))


@functools.lru_cache(maxsize=None)
def base_and_inputs():
  config = common.run_config()
  batch = next(batches_for(config))
  inputs = {k: np.asarray(v) for k, v in model_inputs(batch, dialogue_causal=False).items()}
  model = LLaDAV(MODEL, tiny.F32)
  params = model.init(jax.random.key(0), **inputs)["params"]
  return jax.device_get(jax.tree.map(lambda x: getattr(x, "value", x), params,
                                     is_leaf=lambda x: hasattr(x, "value"))), inputs


def adapted(lora=LORA, scan=True):
  compute = dataclasses.replace(tiny.F32 if scan else tiny.F32_LOOP, lora=lora)
  return LLaDAV(MODEL, compute)


def logits(model, params, inputs):
  return np.asarray(jax.jit(model.apply)({"params": params}, **inputs))


def with_fresh_adapters(base, lora=LORA):
  from lladav_jax.models.lladav import abstract_params
  import flax.linen as nn
  model = adapted(lora)
  abstract = nn.unbox(abstract_params(model))
  return model, jax.device_get(adapters.attach(jax.device_put(base), abstract, None, lora, seed=3))


def test_fresh_adapters_give_exactly_the_base_models_logits():
  base, inputs = base_and_inputs()
  assert inputs["image_mask"].any(), "the vision tower and projector adapters must be on the path"
  model, params = with_fresh_adapters(base)
  flat = traverse_util.flatten_dict(params)
  lora_a = [v for k, v in flat.items() if k[-1] == "lora_a"]
  assert lora_a and all(np.abs(a).max() > 0 for a in lora_a), "A is random"
  assert all(not v.any() for k, v in flat.items() if k[-1] == "lora_b"), "B is zero"
  np.testing.assert_array_equal(logits(model, params, inputs), logits(LLaDAV(MODEL, tiny.F32), base, inputs))


def random_b(params, seed=0):
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(params)
  return traverse_util.unflatten_dict({k: rng.normal(0, 0.2, v.shape).astype(v.dtype) if k[-1] == "lora_b" else v
                                       for k, v in flat.items()})


def test_merged_kernels_give_the_logits_of_base_plus_adapters():
  base, inputs = base_and_inputs()
  model, params = with_fresh_adapters(base)
  params = random_b(params)
  with_adapters = logits(model, params, inputs)
  base_logits = logits(LLaDAV(MODEL, tiny.F32), base, inputs)
  assert np.abs(with_adapters - base_logits).max() > 1e-2, "non-zero B must change the logits"
  flat = traverse_util.flatten_dict(params)
  leaves = {k: v for k, v in flat.items() if is_adapter(k)}
  merged = traverse_util.unflatten_dict({k: merge(k, v, leaves, LORA.scaling) for k, v in flat.items()
                                         if not is_adapter(k)})
  # float32: the merged kernel rounds W + s A B once, the adapted layer adds two products.
  np.testing.assert_allclose(logits(LLaDAV(MODEL, tiny.F32), merged, inputs), with_adapters,
                             rtol=1e-5, atol=1e-5)


@functools.lru_cache(maxsize=None)
def lora_plan(**lora_fields):
  config = common.run_config()
  config.optim.update(dict(lr=1e-2, vision_lr=1e-2, warmup_ratio=0.0))
  config.lora.update(dict(enabled=True, rank=4, alpha=8.0, projector=True, **lora_fields))
  return config, loop.setup(config, 10, devices=jax.devices()[:1])


def lora_state(config, plan, base):
  params = adapters.attach(jax.device_put(base), plan.abstract_state.params, plan.state_shardings.params,
                           plan.model.compute.lora, config.seed)
  return with_params(plan.state_shardings, params, plan.tx, config.seed)


def test_training_changes_only_the_adapters_and_only_they_have_optimizer_state():
  base, _ = base_and_inputs()
  config, plan = lora_plan()
  state = lora_state(config, plan, base)
  before = traverse_util.flatten_dict(jax.device_get(state.params))
  batches = batches_for(config)
  for _ in range(2):
    state, metrics = plan.train_step(state, step_inputs(next(batches), dialogue_causal=False))
    assert np.isfinite(float(metrics["loss"]))
  after = traverse_util.flatten_dict(jax.device_get(state.params))
  assert before.keys() == after.keys()
  adapter_paths = {k for k in before if is_adapter(k)}
  assert {k[0] for k in adapter_paths} == {"language_model", "mm_projector"}
  for k in before:
    if k in adapter_paths:
      assert not np.array_equal(before[k], after[k]), "/".join(k)
    else:
      np.testing.assert_array_equal(before[k], after[k], err_msg="/".join(k))
  moments = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
    if np.ndim(leaf) > 0:
      names = tuple(str(getattr(key, "key", getattr(key, "name", ""))) for key in path)
      moments.setdefault(names[-1], []).append((names, leaf.shape))
  assert set(moments) == {"lora_a", "lora_b"}, sorted(moments)
  # Adam's mu and nu for each adapter leaf, nothing else.
  assert sum(len(v) for v in moments.values()) == 2 * len(adapter_paths)


@pytest.mark.parametrize("scan", [True, False], ids=["scanned", "layer_loop"])
def test_adapter_leaves_sit_beside_the_kernels_they_adapt(scan):
  from lladav_jax.models.lladav import abstract_params
  import flax.linen as nn
  flat = traverse_util.flatten_dict(nn.unbox(abstract_params(adapted(scan=scan))))
  plain = traverse_util.flatten_dict(nn.unbox(abstract_params(LLaDAV(MODEL, tiny.F32 if scan else tiny.F32_LOOP))))
  assert {k for k in flat if not is_adapter(k)} == set(plain), "the base keeps its names"
  for k, v in flat.items():
    if k[-1] == "lora_a":
      kernel = flat[k[:-1] + ("kernel",)]
      assert v.shape == kernel.shape[:-1] + (LORA.rank,)
      assert flat[k[:-1] + ("lora_b",)].shape == kernel.shape[:-2] + (LORA.rank, kernel.shape[-1])
  modules = {k[-2] for k in flat if k[-1] == "lora_a"}
  assert modules == set(LORA.targets) | {"q_proj", "fc2", "linear_1", "linear_2"}


@pytest.mark.slow  # two more plans compiled
def test_dropout_acts_in_training_only():
  base, inputs = base_and_inputs()
  config, plan = lora_plan(dropout=0.5)
  _, plain_plan = lora_plan()
  host = next(batches_for(config))
  params = random_b(jax.device_get(lora_state(config, plan, base).params))  # B != 0: dropout shows

  def first_loss(step_plan):  # each step donates its state: a fresh one per plan
    state = with_params(step_plan.state_shardings, jax.device_put(params), step_plan.tx, config.seed)
    return float(step_plan.train_step(state, step_inputs(host, dialogue_causal=False))[1]["loss"])

  assert abs(first_loss(plan) - first_loss(plain_plan)) > 1e-4, "dropout changes the training loss"
  np.testing.assert_array_equal(logits(plan.model, params, inputs), logits(plain_plan.model, params, inputs))


@pytest.mark.parametrize("fields,message", [
    (dict(targets=()), "no layer to adapt"),
    (dict(targets=("qkv_proj",)), r"lora.targets names unknown layers \['qkv_proj'\]"),
    (dict(rank=0), "lora.rank = 0"),
    (dict(base_quantization="int4"), "lora.base_quantization = 'int4'"),
])
def test_settings_that_cannot_work_are_refused_by_name(fields, message):
  with pytest.raises(ValueError, match=message):
    LoraConfig(**fields)

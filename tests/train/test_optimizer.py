"""The optimiser against torch's AdamW + clip_grad_norm_ + transformers' cosine schedule, and the
per-component labels and freezing."""

import jax
import numpy as np
import optax
import pytest
from flax import traverse_util
from ml_collections import ConfigDict

from configs import base
from lladav_jax.train import optimizer

PARAMS = {
    "vision_tower": {"encoder": {"layers": {"fc1": {"kernel": (6, 5), "bias": (5,)},
                                            "layer_norm1": {"scale": (6,), "bias": (6,)}}}},
    "mm_projector": {"linear_1": {"kernel": (6, 4), "bias": (4,)}},
    "image_newline": (4,),
    "language_model": {"layers": {"input_layernorm": {"scale": (4,)}, "q_proj": {"kernel": (4, 4)}},
                       "lm_head": {"kernel": (4, 9)}},
}


def make_params(seed=0):
  rng = np.random.default_rng(seed)
  flat = traverse_util.flatten_dict(PARAMS, is_leaf=lambda _, x: isinstance(x, tuple))
  return traverse_util.unflatten_dict({k: rng.normal(0, 1, v).astype(np.float32) for k, v in flat.items()})


def optim_config(**overrides):
  optim = base.get_config().optim
  optim.update(overrides)
  return optim


def test_every_param_is_labelled_by_component():
  labels = traverse_util.flatten_dict(optimizer.param_labels(make_params(), ("vision", "projector", "language")))
  assert labels[("vision_tower", "encoder", "layers", "fc1", "kernel")] == "vision"
  assert labels[("mm_projector", "linear_1", "bias")] == "projector"
  assert labels[("image_newline",)] == "language"  # upstream: outside vision tower and projector
  assert labels[("language_model", "lm_head", "kernel")] == "language"
  stage1 = traverse_util.flatten_dict(optimizer.param_labels(make_params(), ("projector",)))
  assert {k for k, v in stage1.items() if v != optimizer.FROZEN} == {
      ("mm_projector", "linear_1", "kernel"), ("mm_projector", "linear_1", "bias")}


def test_an_unknown_param_or_component_fails_by_name():
  with pytest.raises(ValueError, match="vision_resampler/w"):
    optimizer.param_labels({"vision_resampler": {"w": np.zeros(2)}}, ("vision",))
  with pytest.raises(ValueError, match="mm_mlp_adapter"):
    optimizer.param_labels(make_params(), ("mm_mlp_adapter",))


def test_frozen_params_have_no_optimizer_moments():
  params = make_params()
  tx, _ = optimizer.make_optimizer(optim_config(trainable=("projector",)), params, total_steps=10)
  state = tx.init(params)
  arrays = [x for x in jax.tree.leaves(state) if np.ndim(x) > 0]
  projector = traverse_util.flatten_dict(params["mm_projector"])
  # Adam's mu and nu for the projector, nothing else (counts are scalars).
  assert sorted(a.shape for a in arrays) == sorted([v.shape for v in projector.values()] * 2)


def torch_reference(params, grads_per_step, lrs, trainable, weight_decay, total_steps, warmup_ratio):
  """HF Trainer's optimiser: torch AdamW param groups (per-component lr, no decay for biases and
  LayerNorm weights), clip_grad_norm_(1.0), get_cosine_schedule_with_warmup(ceil(ratio * steps))."""
  import math
  import torch
  from transformers import get_cosine_schedule_with_warmup

  flat = traverse_util.flatten_dict(params)
  tensors = {k: torch.nn.Parameter(torch.tensor(v)) for k, v in flat.items()}
  component = {"vision_tower": "vision", "mm_projector": "projector"}
  groups = []
  for name in trainable:
    for decay in (True, False):
      members = [t for k, t in tensors.items()
                 if component.get(k[0], "language") == name
                 and (decay == (k[-1] != "bias" and not (k[0] == "vision_tower" and "norm" in k[-2])))]
      groups.append(dict(params=members, lr=lrs[name], weight_decay=weight_decay if decay else 0.0))
  opt = torch.optim.AdamW(groups, betas=(0.9, 0.999), eps=1e-8)
  sched = get_cosine_schedule_with_warmup(opt, math.ceil(total_steps * warmup_ratio), total_steps)
  trained = [t for g in groups for t in g["params"]]
  for grads in grads_per_step:
    for k, t in tensors.items():
      t.grad = torch.tensor(grads[k])
    torch.nn.utils.clip_grad_norm_(trained, 1.0)
    opt.step()
    sched.step()
    opt.zero_grad()
  return {k: t.detach().numpy() for k, t in tensors.items()}


@pytest.mark.parametrize("trainable", [("vision", "projector", "language"), ("projector",)])
def test_updates_match_torch_adamw_with_hf_schedule(trainable):
  params = make_params()
  steps, ratio, wd = 12, 0.2, 0.1
  optim = optim_config(trainable=trainable, lr=3e-2, vision_lr=1e-2, projector_lr=5e-2, weight_decay=wd,
                       warmup_ratio=ratio)
  tx, _ = optimizer.make_optimizer(optim, params, total_steps=steps)
  rng = np.random.default_rng(1)
  flat = traverse_util.flatten_dict(params)
  # Some steps with a global norm far above the clip threshold, some below.
  grads_per_step = [{k: (rng.normal(0, 3.0 if s % 2 else 0.05, v.shape)).astype(np.float32)
                     for k, v in flat.items()} for s in range(steps)]
  state, p = tx.init(params), params
  update = jax.jit(tx.update)
  for grads in grads_per_step:
    # Frozen params get no gradient in the train step; torch likewise sees none for them.
    g = traverse_util.unflatten_dict({k: v if optimizer.component_of(k) in trainable else np.zeros_like(v)
                                      for k, v in grads.items()})
    updates, state = update(g, state, p)
    p = optax.apply_updates(p, updates)
  # torch's optimiser and clipping see only the trainable tensors, whatever the others' gradients.
  expected = torch_reference(params, grads_per_step, optimizer.learning_rates(optim), trainable, wd, steps,
                             ratio)
  got = traverse_util.flatten_dict(p)
  for k in flat:
    # float32 both sides; Adam's normalised steps keep errors at a few ulp of the lr per step.
    np.testing.assert_allclose(got[k], expected[k], rtol=1e-5, atol=1e-6, err_msg="/".join(k))
    if optimizer.component_of(k) not in trainable:
      np.testing.assert_array_equal(got[k], flat[k])


def test_hf_schedule_values():
  from transformers import get_cosine_schedule_with_warmup
  import torch
  total, warmup = 37, optimizer.warmup_steps(37, 0.03)
  assert warmup == 2  # ceil(1.11)
  opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-5)
  sched = get_cosine_schedule_with_warmup(opt, warmup, total)
  ours = optimizer.hf_cosine_schedule(1e-5, total, warmup)
  for count in range(total + 2):
    np.testing.assert_allclose(float(ours(count)), opt.param_groups[0]["lr"], rtol=1e-6, atol=1e-12)
    opt.step()
    sched.step()


def test_learning_rates_fall_back_to_lr():
  optim = ConfigDict(dict(lr=1e-5, vision_lr=None, projector_lr=None))
  assert optimizer.learning_rates(optim) == dict(vision=1e-5, projector=1e-5, language=1e-5)

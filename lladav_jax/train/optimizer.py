"""The optimiser as upstream's HF Trainer runs it: AdamW, grad-norm clipping, cosine with warmup,
per-component learning rates and freezing.

Every parameter belongs to one component, from its path: `vision_tower/...` -> "vision",
`mm_projector/...` -> "projector", `language_model/...` and `image_newline` -> "language" (upstream's
`mm_language_model` tunable part is every parameter outside the vision tower and projector, the image
newline included). Components not listed in `optim.trainable` are frozen: they get
`optax.set_to_zero()`, which allocates no Adam moments (optax.masked would keep them). When the params
hold LoRA adapters (models/lora.py) only the adapters train, those of the listed components; the base
is frozen, so its gradients, updates and optimiser state never exist.
"""

import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax
from flax import traverse_util
from ml_collections import ConfigDict

from lladav_jax.models.lora import is_adapter

COMPONENTS = ("vision", "projector", "language")
FROZEN = "frozen"


def component_of(path: Sequence[str]) -> str:
  """The component a parameter path (without the "params" collection) belongs to."""
  top = path[0]
  if top == "vision_tower":
    return "vision"
  if top == "mm_projector":
    return "projector"
  if top in ("language_model", "image_newline"):
    return "language"
  raise ValueError(f"parameter {'/'.join(path)!r} belongs to no component of {COMPONENTS}")


def param_labels(params: Mapping[str, Any], trainable: Sequence[str]) -> dict:
  """Tree like `params` whose leaves are the component name, or FROZEN when not trainable."""
  unknown = set(trainable) - set(COMPONENTS)
  if unknown:
    raise ValueError(f"optim.trainable names unknown components {sorted(unknown)}; choices: {COMPONENTS}")
  flat = traverse_util.flatten_dict(params)
  adapters_only = any(is_adapter(path) for path in flat)
  labels = {}
  for path in flat:
    component = component_of(path)
    tuned = component in trainable and (is_adapter(path) or not adapters_only)
    labels[path] = component if tuned else FROZEN
  assert set(labels) == set(flat), "every parameter must get a label"
  return traverse_util.unflatten_dict(labels)


def decays(path: Sequence[str]) -> bool:
  """Whether HF's Trainer applies weight decay: not to biases, not to (vision) LayerNorm weights.
  (LLaDA's RMSNorm is not a torch LayerNorm, so HF decays it; all published recipes use 0 anyway.)"""
  return not (path[-1] == "bias" or (path[0] == "vision_tower" and "norm" in path[-2]))


def warmup_steps(total_steps: int, warmup_ratio: float) -> int:
  """HF TrainingArguments.get_warmup_steps."""
  return math.ceil(total_steps * warmup_ratio)


def hf_cosine_schedule(peak_lr: float, total_steps: int, num_warmup: int) -> optax.Schedule:
  """transformers.get_cosine_schedule_with_warmup (half a cosine), as a function of the update count.

  Like HF (the scheduler steps after the optimiser), the first update uses lr(0) = 0 when warming up.
  """

  def schedule(count):
    count = jnp.asarray(count, jnp.float32)
    warm = count / max(1, num_warmup)
    progress = (count - num_warmup) / max(1, total_steps - num_warmup)
    cosine = jnp.maximum(0.0, 0.5 * (1.0 + jnp.cos(jnp.pi * progress)))
    return peak_lr * jnp.where(count < num_warmup, warm, cosine)

  return schedule


def clip_by_global_norm_like_torch(max_norm: float) -> optax.GradientTransformation:
  """torch.nn.utils.clip_grad_norm_ (and DeepSpeed's clipping): scale by min(1, max / (norm + 1e-6))."""

  def update(updates, state, params=None):
    del params
    norm = optax.tree.norm(updates)
    scale = jnp.minimum(1.0, max_norm / (norm + 1e-6))
    return jax.tree.map(lambda g: (g * scale).astype(g.dtype), updates), state

  return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


def learning_rates(optim: ConfigDict) -> dict[str, float]:
  """Peak learning rate of each component; unset component rates fall back to `optim.lr`."""
  return dict(
      vision=optim.lr if optim.vision_lr is None else optim.vision_lr,
      projector=optim.lr if optim.projector_lr is None else optim.projector_lr,
      language=optim.lr,
  )


def make_optimizer(optim: ConfigDict, params: Mapping[str, Any], total_steps: int
                   ) -> tuple[optax.GradientTransformation, dict]:
  """(optimizer, labels) for `params` (plain or abstract arrays, without the "params" collection)."""
  labels = param_labels(params, optim.trainable)
  num_warmup = warmup_steps(total_steps, optim.warmup_ratio)
  decay_mask = traverse_util.unflatten_dict(
      {path: decays(path) for path in traverse_util.flatten_dict(params)})
  transforms = {FROZEN: optax.set_to_zero()}
  for component, lr in learning_rates(optim).items():
    transforms[component] = optax.adamw(
        hf_cosine_schedule(lr, total_steps, num_warmup), b1=optim.b1, b2=optim.b2, eps=optim.eps,
        weight_decay=optim.weight_decay, mask=decay_mask)
  tx = optax.chain(clip_by_global_norm_like_torch(optim.max_grad_norm),
                   optax.multi_transform(transforms, labels))
  return tx, labels


def trainable_paths(labels: Mapping[str, Any]) -> frozenset:
  """Flattened paths (tuples) of the parameters that are trained."""
  return frozenset(path for path, label in traverse_util.flatten_dict(labels).items() if label != FROZEN)

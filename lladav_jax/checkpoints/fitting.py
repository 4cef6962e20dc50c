"""Whether a checkpoint's params fit a run's model, compared field by field.

A checkpoint's config has three kinds of fields:
  - those that shape the params or change what they compute (widths, depths, heads, vocabulary,
    projector type, RoPE base, norm epsilons, crop and patch size, the vision layer fed to the
    projector, the special token ids): they must be equal;
  - the run's own choices of how images become tokens and how long a sample may be (RUN_FIELDS):
    the run config's values are kept (a stage may change them, e.g. stage 1 "square" -> stage 2 anyres);
  - those that only describe the checkpoint (CHECKPOINT_FIELDS: upstream's `bos_token_id` 128000, the
    tower's name, the random-init scale, ...): the checkpoint's values are taken, so that the run's
    config.json still describes it.
Fields are named as the run config spells them (`model.text.hidden_size`).
"""

import dataclasses
from typing import Any

from lladav_jax.model_config import LLaDAVConfig

CHECKPOINT_FIELDS = frozenset({
    "text.bos_token_id", "text.eos_token_id", "text.pad_token_id",  # the model reads `tokens`, not these
    "text.initializer_range",  # the std of a random init: no params are drawn
    "text.max_position_embeddings",  # RoPE has no table; only generation reads it, when max_length is unset
    "vision_tower_name",
})
RUN_FIELDS = frozenset({"image_aspect_ratio", "image_grid_pinpoints", "patch_merge_type", "newline_position",
                        "spatial_pool_mode", "max_length"})
# Follow from the towers' widths, which are compared themselves.
_DERIVED_FIELDS = frozenset({"projector.in_features", "projector.out_features"})


class CheckpointMismatch(ValueError):
  """The checkpoint's params do not fit the run's model; `fields` names each difference."""

  def __init__(self, what: str, fields: list[str]):
    self.fields = fields
    super().__init__(f"{what} does not fit the run config's model: {'; '.join(fields)}")


def flat_fields(config: Any, prefix: str = "") -> dict[str, Any]:
  """{"text.hidden_size": 4096, ...}: every field of a (nested) frozen config dataclass."""
  out = {}
  for field in dataclasses.fields(config):
    value = getattr(config, field.name)
    if dataclasses.is_dataclass(value):
      out.update(flat_fields(value, f"{prefix}{field.name}."))
    else:
      out[prefix + field.name] = value
  return out


def run_config_name(field: str) -> str:
  """How the run config spells a field (its `model` section; the projector is its type there)."""
  return "model." + ("projector_type" if field == "projector.projector_type" else field)


def differences(checkpoint: LLaDAVConfig, run: LLaDAVConfig) -> list[str]:
  """'model.text.hidden_size: 32 in the checkpoint, 64 in the run config' for each compared field that differs."""
  ours, theirs = flat_fields(run), flat_fields(checkpoint)
  skipped = CHECKPOINT_FIELDS | RUN_FIELDS | _DERIVED_FIELDS
  return [f"{run_config_name(name)}: {theirs[name]!r} in the checkpoint, {ours[name]!r} in the run config"
          for name in ours if name not in skipped and ours[name] != theirs[name]]


def fitted_config(checkpoint: LLaDAVConfig, run: LLaDAVConfig, what: str) -> LLaDAVConfig:
  """The run's model config with the checkpoint's descriptive fields; CheckpointMismatch (naming every
  differing field) when the checkpoint's params do not fit the run's model. `what` names the checkpoint."""
  problems = differences(checkpoint, run)
  if problems:
    raise CheckpointMismatch(what, problems)
  theirs = flat_fields(checkpoint)
  return with_fields(run, {name: theirs[name] for name in CHECKPOINT_FIELDS})


def with_fields(config: Any, values: dict[str, Any]) -> Any:
  """A copy of a (nested) frozen config with the dotted fields of `values` replaced."""
  nested: dict[str, dict[str, Any]] = {}
  own = {}
  for name, value in values.items():
    head, _, rest = name.partition(".")
    if rest:
      nested.setdefault(head, {})[rest] = value
    else:
      own[head] = value
  own.update({head: with_fields(getattr(config, head), inner) for head, inner in nested.items()})
  return dataclasses.replace(config, **own)

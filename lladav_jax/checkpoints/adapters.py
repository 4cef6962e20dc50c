"""`load_adapters(path, ...)`: a LoRA run's adapters (WORKDIR/adapters) over a base, without merging.

    lora = check_adapters("runs/mine/adapters", model_config, compute)  # before any weight is read
    model_config, params = load_pretrained(base)
    compute, params = load_adapters("runs/mine/adapters", lora, compute, params)
    LLaDAV(model_config, compute).apply({"params": params}, **inputs)

The adapters must fit the model: the same towers, the adapted layers' shapes, the layer layout. A
base the adapters were trained on in quantised form is quantised the same way here, so generation
sees the weights training saw. Adapters are small: they are read whole and replicated.
"""

import dataclasses
from typing import Any

import jax
from flax import traverse_util

from lladav_jax.checkpoints.pretrained import CheckpointError
from lladav_jax.convert import adapter_dir
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lora import LoraConfig, quantize_base


def check_adapters(path: str, model_config: LLaDAVConfig, compute: ComputeConfig) -> LoraConfig:
  """The adapters' LoraConfig; CheckpointError, naming `path` and the first misfit, when they do not fit."""
  try:
    info = adapter_dir.read_info(path)
  except ValueError as e:
    raise CheckpointError(f"--adapter {e}") from None
  problems = adapter_dir.fit_problems(path, adapter_dir.expected_shapes(info, model_config, compute.scan_layers))
  if info.scan_layers != compute.scan_layers:
    problems.insert(0, f"layers stored {'stacked' if info.scan_layers else 'unstacked'}, the model's "
                       f"{'stacked' if compute.scan_layers else 'unstacked'}")
  if problems:
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    raise CheckpointError(f"--adapter {path}: does not fit the checkpoint's model: {problems[0]}{more}")
  return info.lora


def load_adapters(path: str, lora: LoraConfig, compute: ComputeConfig,
                  params: dict[str, Any]) -> tuple[ComputeConfig, dict[str, Any]]:
  """(compute with the adapters' LoraConfig, params with the adapter leaves added and the base
  quantised as in training); `lora` is what `check_adapters` returned."""
  flat = jax.jit(lambda p: quantize_base(traverse_util.flatten_dict(p), lora))(params)
  flat.update(adapter_dir.read_all(path))
  return dataclasses.replace(compute, lora=lora), traverse_util.unflatten_dict(flat)

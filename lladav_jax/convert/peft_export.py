"""Adapters out: PEFT's LoRA layout, and merged into the base's kernels for a full export.

PEFT layout: `adapter_config.json` (peft_type LORA, r, lora_alpha, lora_dropout, target_modules) and
`adapter_model.safetensors` with `base_model.model.<module>.lora_A.weight` [rank, in] and `lora_B.weight`
[out, rank] per adapted module, named as in upstream's LLaDA-V checkpoint (`model.layers.N.self_attn.q_proj`,
`model.mm_projector.0`, `model.vision_tower.vision_tower.vision_model.encoder.layers.N.mlp.fc1`).
`target_modules` is a regular expression that matches exactly those modules, so PEFT adapts the same
layers of a full LLaDA-V model (where the vision tower has its own q_proj) as here.

Merging: W + (alpha / rank) A B for every adapted kernel, in float32, cast back to the stored dtype.
"""

import re

import numpy as np
import safetensors.numpy

from lladav_jax.convert import adapter_dir, checkpoint_dir, key_map
from lladav_jax.convert.problems import ConversionError

PEFT_CONFIG_FILE = "adapter_config.json"
PEFT_WEIGHTS_FILE = "adapter_model.safetensors"
PEFT_PREFIX = "base_model.model."


def adapted_entries(info: adapter_dir.AdapterInfo) -> list[key_map.Entry]:
  """The key map's kernel entries of the adapted layers."""
  return [e for e in key_map.lladav_entries(info.config, scan=info.scan_layers)
          if e.path[-1] == "kernel" and info.lora.adapts_path(e.path)]


def module_name(hf_key: str) -> str:
  return hf_key.removesuffix(".weight")


def target_pattern(modules: list[str]) -> str:
  """A regular expression that fullmatches exactly `modules`, layer numbers generalised to \\d+."""
  patterns = sorted({re.sub(r"\\\.\d+\\\.", r"\\.\\d+\\.", re.escape(m)) for m in modules})
  pattern = "|".join(patterns)
  assert all(re.fullmatch(pattern, m) for m in modules)
  return pattern


def peft_tensors(info: adapter_dir.AdapterInfo, adapters: dict) -> dict[str, np.ndarray]:
  tensors = {}
  for entry in adapted_entries(info):
    a, b = adapters[entry.path[:-1] + ("lora_a",)], adapters[entry.path[:-1] + ("lora_b",)]
    for layer, hf_key in enumerate(entry.hf_keys):
      a_layer, b_layer = (a[layer], b[layer]) if entry.stacked else (a, b)
      name = PEFT_PREFIX + module_name(hf_key)
      tensors[f"{name}.lora_A.weight"] = np.ascontiguousarray(a_layer.T)
      tensors[f"{name}.lora_B.weight"] = np.ascontiguousarray(b_layer.T)
  return tensors


def peft_config(info: adapter_dir.AdapterInfo, modules: list[str]) -> dict:
  lora = info.lora
  return dict(peft_type="LORA", task_type=None, base_model_name_or_path=info.base or None, r=lora.rank,
              lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=target_pattern(modules),
              bias="none", fan_in_fan_out=False, use_rslora=False, init_lora_weights=True, inference_mode=True,
              modules_to_save=None)


def export_peft(src, out) -> list[str]:
  """An adapters directory -> PEFT's layout in the new directory `out`; returns summary lines."""
  try:
    info = adapter_dir.read_info(src)
  except ValueError as e:
    raise ConversionError("export-peft", [str(e)]) from None
  adapters = adapter_dir.read_all(src)
  problems = adapter_dir.fit_problems(src, adapter_dir.expected_shapes(info))
  if problems:
    raise ConversionError(f"export-peft: {src} does not fit its adapter.json", problems)
  tensors = peft_tensors(info, adapters)
  modules = sorted({k[len(PEFT_PREFIX):].rsplit(".lora_", 1)[0] for k in tensors})
  with checkpoint_dir.staged(out) as staging:
    safetensors.numpy.save_file(tensors, str(staging / PEFT_WEIGHTS_FILE))
    checkpoint_dir.write_json(staging / PEFT_CONFIG_FILE, peft_config(info, modules))
  return [f"exported {src} -> {out}", f"  {len(modules)} adapted modules, rank {info.lora.rank}, "
          f"{sum(t.size for t in tensors.values())} adapter parameters"]


def merge(path: tuple[str, ...], kernel: np.ndarray, adapters: dict, scaling: float) -> np.ndarray:
  """`kernel` [..., in, out] plus its adapter's update, when `path` has one."""
  a = adapters.get(path[:-1] + ("lora_a",))
  if path[-1] != "kernel" or a is None:
    return kernel
  b = adapters[path[:-1] + ("lora_b",)]
  update = np.matmul(a.astype(np.float32), b.astype(np.float32)) * scaling
  return (kernel.astype(np.float32) + update).astype(kernel.dtype)

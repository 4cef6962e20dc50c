"""The adapters directory a LoRA run writes (format "lladav_jax.adapters", version 1):

  adapter.json    format, version, the LoraConfig's fields ("lora"), scan_layers, the base checkpoint
                  the run started from ("base", may be empty), and the model's config.json ("config")
  params/         orbax PyTree of the adapter leaves only (`.../q_proj/lora_a` [in, rank], `lora_b`
                  [rank, out], float32), at the paths they have in the model's params

Written through a staging directory (checkpoint_dir.staged), so a directory with adapter.json is complete.
"""

import dataclasses
import json
import pathlib
from typing import Any

import flax.linen as nn
import numpy as np
from flax import traverse_util

from lladav_jax.convert import checkpoint_dir, orbax_io
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lladav import LLaDAV, abstract_params
from lladav_jax.models.lora import LoraConfig, is_adapter

FORMAT = "lladav_jax.adapters"
FORMAT_VERSION = 1
INFO_FILE = "adapter.json"
PARAMS_DIR = "params"


@dataclasses.dataclass(frozen=True)
class AdapterInfo:
  lora: LoraConfig
  scan_layers: bool
  base: str
  config: LLaDAVConfig


def save(out: str | pathlib.Path, adapters: dict[tuple[str, ...], np.ndarray], *, lora: LoraConfig,
         scan_layers: bool, base: str, config: LLaDAVConfig) -> None:
  """Writes `adapters` ({path: host array}) into the new directory `out`."""
  with checkpoint_dir.staged(out) as staging:
    orbax_io.save(staging / PARAMS_DIR,
                  {path: (value.shape, value.dtype, lambda value=value: np.asarray(value))
                   for path, value in adapters.items()})
    checkpoint_dir.write_json(staging / INFO_FILE, dict(
        format=FORMAT, format_version=FORMAT_VERSION, lora=dataclasses.asdict(lora), scan_layers=scan_layers,
        base=base, config=config.to_hf_config()))


def read_info(path: str | pathlib.Path) -> AdapterInfo:
  """adapter.json of an adapters directory; a ValueError naming the directory for anything else."""
  path = pathlib.Path(path)
  info_file = path / INFO_FILE
  if not info_file.is_file():
    raise ValueError(f"{path}: not an adapters directory (no {INFO_FILE})")
  try:
    info = json.loads(info_file.read_text())
    if info.get("format") != FORMAT or info.get("format_version") != FORMAT_VERSION:
      raise ValueError(f"format {info.get('format')!r} version {info.get('format_version')!r}; this code reads "
                       f"{FORMAT!r} version {FORMAT_VERSION}")
    return AdapterInfo(LoraConfig(**info["lora"]), bool(info["scan_layers"]), str(info["base"]),
                       LLaDAVConfig.from_hf_config(info["config"]))
  except (KeyError, TypeError, ValueError) as e:
    raise ValueError(f"{info_file}: {e}") from None


def shapes(path: str | pathlib.Path) -> dict[tuple[str, ...], tuple[tuple[int, ...], np.dtype]]:
  return orbax_io.metadata(pathlib.Path(path) / PARAMS_DIR)


def read_all(path: str | pathlib.Path) -> dict[tuple[str, ...], np.ndarray]:
  """Every adapter leaf into host memory (adapters are small)."""
  params = pathlib.Path(path) / PARAMS_DIR
  return {leaf: orbax_io.read_leaf(params, leaf) for leaf in orbax_io.metadata(params)}


def expected_shapes(info: AdapterInfo, config: LLaDAVConfig | None = None,
                    scan_layers: bool | None = None) -> dict[tuple[str, ...], tuple[int, ...]]:
  """{path: shape} of the adapter leaves that `info.lora` gives a model of `config` (default: the
  adapters' own config and layout)."""
  lora = dataclasses.replace(info.lora, base_quantization="none")  # adapters do not depend on the base's storage
  compute = ComputeConfig(scan_layers=info.scan_layers if scan_layers is None else scan_layers, lora=lora)
  flat = traverse_util.flatten_dict(nn.unbox(abstract_params(LLaDAV(config or info.config, compute))))
  return {tuple(p): tuple(v.shape) for p, v in flat.items() if is_adapter(p)}


def fit_problems(path: str | pathlib.Path, expected: dict[tuple[str, ...], Any]) -> list[str]:
  """Why the adapters at `path` do not fit a model whose adapter leaves are `expected` ({path: shape})."""
  stored = shapes(path)
  problems = [f"{'/'.join(p)}: the model has no such adapter (the adapters' targets differ)"
              for p in sorted(set(stored) - set(expected))]
  problems += [f"{'/'.join(p)}: missing from the adapters" for p in sorted(set(expected) - set(stored))]
  problems += [f"{'/'.join(p)}: shape {stored[p][0]}, the model needs {tuple(expected[p])}"
               for p in sorted(set(stored) & set(expected)) if tuple(stored[p][0]) != tuple(expected[p])]
  return problems

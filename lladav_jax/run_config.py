"""Where an ml-collections run config meets the modules' frozen configs, both ways.

`model_section` / `compute_section` / `lora_section` write a dataclass's fields and values as a config
section (so configs/base.py declares none of them again); `model_config` / `compute_config` read them
back, validated by the dataclasses (the compute config carries the `lora` section's adapters when
`lora.enabled`). `load_config_file` loads a configs/*.py file by path, as `--config` does.
"""

import dataclasses
import importlib.util
import os
import sys
import types
import typing

from ml_collections import ConfigDict, config_dict

from lladav_jax.model_config import (LLaDAConfig, LLaDAVConfig, ProjectorConfig, SiglipConfig, grid_pinpoints_range,
                                     parse_grid_pinpoints)
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lora import LoraConfig
from lladav_jax.tokens import TokenIds


def _value(field: dataclasses.Field, value):
  """A section entry: None becomes a typed placeholder, so that an override is still type-checked."""
  if value is not None:
    return value
  kinds = [t for t in typing.get_args(field.type) if t is not type(None)]
  return config_dict.placeholder(kinds[0]) if isinstance(field.type, types.UnionType) and kinds else None


def dataclass_section(instance) -> ConfigDict:
  """Every field of a (flat) dataclass instance as a ConfigDict entry."""
  return ConfigDict({f.name: _value(f, getattr(instance, f.name)) for f in dataclasses.fields(instance)})


def model_section(model: LLaDAVConfig) -> ConfigDict:
  """`config.model`: the towers' fields as `text` and `vision`, the projector as its type (its widths
  follow from the towers), the special ids as `tokens`, the grid pinpoints in crops where they form a
  "(1x1),...,(6x6)" range (so that they follow vision.image_size), and LLaDAVConfig's other fields."""
  section = ConfigDict()
  for f in dataclasses.fields(model):
    value = getattr(model, f.name)
    if f.name in ("text", "vision"):
      section[f.name] = dataclass_section(value)
    elif f.name == "projector":
      section.projector_type = value.projector_type
    elif f.name == "tokens":
      section.tokens = ConfigDict(value.to_dict())
    elif f.name == "image_grid_pinpoints":
      section[f.name] = grid_pinpoints_range(value, model.vision.image_size) or value
    else:
      section[f.name] = _value(f, value)
  return section


def compute_section(compute: ComputeConfig) -> ConfigDict:
  section = dataclass_section(compute)
  del section["lora"]  # its own section, `lora`
  return section


def lora_section(lora: LoraConfig) -> ConfigDict:
  """`config.lora`: `enabled` and the LoraConfig's fields."""
  section = dataclass_section(lora)
  section.enabled = False
  return section


def model_config(config: ConfigDict) -> LLaDAVConfig:
  """`config.model` -> LLaDAVConfig (choices are validated by the dataclasses)."""
  fields = config.model.to_dict()
  text, vision = LLaDAConfig(**fields.pop("text")), SiglipConfig(**fields.pop("vision"))
  projector = ProjectorConfig(fields.pop("projector_type"), in_features=vision.hidden_size,
                              out_features=text.hidden_size)
  tokens = TokenIds.from_dict(fields.pop("tokens"))
  fields["image_grid_pinpoints"] = parse_grid_pinpoints(fields["image_grid_pinpoints"], vision.image_size)
  return LLaDAVConfig(text=text, vision=vision, projector=projector, tokens=tokens, **fields)


def lora_config(config: ConfigDict) -> LoraConfig | None:
  fields = config.lora.to_dict()
  return LoraConfig(**fields) if fields.pop("enabled") else None


def compute_config(config: ConfigDict) -> ComputeConfig:
  return ComputeConfig(**config.compute.to_dict(), lora=lora_config(config))


def config_package_root(path: str) -> str | None:
  """Config files import their siblings (`from configs import base`): when `path` lies in a package
  directory, the directory that holds that package, else None."""
  directory = os.path.dirname(os.path.abspath(path))
  return os.path.dirname(directory) if os.path.isfile(os.path.join(directory, "__init__.py")) else None


def load_config_file(path: str) -> ConfigDict:
  """The `get_config()` of a config file, loaded by path (its package made importable)."""
  if not os.path.isfile(path):
    raise FileNotFoundError(f"config file not found: {path}")
  root = config_package_root(path)
  if root is not None and root not in sys.path:
    sys.path.insert(0, root)
  spec = importlib.util.spec_from_file_location(f"_config_{os.path.splitext(os.path.basename(path))[0]}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config()

"""The one place where an ml-collections run config becomes the modules' frozen configs."""

from ml_collections import ConfigDict

from lladav_jax.model_config import (ComputeConfig, LLaDAConfig, LLaDAVConfig, ProjectorConfig, SiglipConfig,
                                     parse_grid_pinpoints)
from lladav_jax.tokens import TokenIds


def model_config(config: ConfigDict) -> LLaDAVConfig:
  """`config.model` -> LLaDAVConfig (choices are validated by the dataclasses)."""
  m = config.model
  text = LLaDAConfig(**m.text.to_dict())
  vision = SiglipConfig(**m.vision.to_dict())
  return LLaDAVConfig(
      text=text,
      vision=vision,
      projector=ProjectorConfig(m.projector_type, in_features=vision.hidden_size, out_features=text.hidden_size),
      vision_select_layer=m.vision_select_layer,
      vision_tower_name=m.vision_tower_name,
      image_aspect_ratio=m.image_aspect_ratio,
      image_grid_pinpoints=parse_grid_pinpoints(m.image_grid_pinpoints, vision.image_size),
      patch_merge_type=m.patch_merge_type,
      newline_position=m.newline_position,
      spatial_pool_mode=m.spatial_pool_mode,
      max_length=m.max_length,
      tokens=TokenIds.from_dict(m.tokens.to_dict()),
  )


def compute_config(config: ConfigDict) -> ComputeConfig:
  return ComputeConfig(**config.compute.to_dict())

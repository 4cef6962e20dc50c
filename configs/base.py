"""LLaDA-V as published: LLaDA-8B + SigLIP2 so400m-patch14-384 + mlp2x_gelu, anyres_max_4.

Every key the code reads is declared here; stage configs import this and change what differs.
"""

from ml_collections import ConfigDict

from lladav_jax import sharding


def get_config() -> ConfigDict:
  config = ConfigDict()
  config.seed = 0

  config.model = ConfigDict()
  model = config.model
  # Language tower (LLaDA-8B).
  model.text = ConfigDict(dict(
      vocab_size=126464,
      hidden_size=4096,
      intermediate_size=12288,
      num_hidden_layers=32,
      num_attention_heads=32,
      num_key_value_heads=32,  # full multi-head attention
      rope_theta=500000.0,
      rms_norm_eps=1e-5,
      max_position_embeddings=16384,
  ))
  # Vision tower (SigLIP2 so400m-patch14-384); num_hidden_layers is the tower's full depth.
  model.vision = ConfigDict(dict(
      hidden_size=1152,
      intermediate_size=4304,
      num_hidden_layers=27,
      num_attention_heads=16,
      image_size=384,
      patch_size=14,
      layer_norm_eps=1e-6,
  ))
  model.vision_tower_name = "google/siglip2-so400m-patch14-384"
  model.vision_select_layer = -2  # penultimate layer's output, un-normalised
  model.projector_type = "mlp2x_gelu"
  model.image_aspect_ratio = "anyres_max_4"
  model.image_grid_pinpoints = "(1x1),...,(6x6)"  # in crops of vision.image_size
  model.patch_merge_type = "spatial_unpad"
  model.newline_position = "grid"  # video: a newline after every row of every frame
  model.spatial_pool_mode = "bilinear"  # video: 2x2 pooling of frame features
  model.max_length = 8192  # spliced sequence length (16384 for OneVision-stage data)

  # How the model computes (not part of the checkpoint).
  config.compute = ConfigDict(dict(
      dtype="bfloat16",
      param_dtype="float32",
      scan_layers=True,
      remat_policy="full",  # one of ComputeConfig.REMAT_POLICIES
      attention_impl="xla",  # "cudnn" on GPUs with cuDNN flash attention
  ))

  # Device mesh (one size may be -1: all remaining devices) and logical-axis rules.
  config.mesh = ConfigDict(dict(data=1, fsdp=-1, tensor=1))
  config.logical_axis_rules = [list(rule) for rule in sharding.DEFAULT_LOGICAL_AXIS_RULES]
  return config

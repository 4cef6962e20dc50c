"""LLaDA-V as published: LLaDA-8B + SigLIP2 so400m-patch14-384 + mlp2x_gelu, anyres_max_4.

Every key the code reads is declared here; stage configs import this and change what differs.
"""

import dataclasses

from ml_collections import ConfigDict, config_dict

from lladav_jax import sharding
from lladav_jax.tokens import TokenIds


def data_defaults() -> ConfigDict:
  """DataConfig's fields and defaults (sources empty; the pipeline repeats the data for ever)."""
  from lladav_jax.data.config import DataConfig
  d = {f.name: f.default for f in dataclasses.fields(DataConfig) if f.name != "sources"}
  d["video"] = dataclasses.asdict(d["video"])
  d["sources"] = []  # dicts of lladav_jax.data.SourceSpec fields: path, image_folder, sampling, ...
  return ConfigDict(d)


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
      initializer_range=0.02,  # std of a random init of the language tower's weights
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
  model.tokens = ConfigDict(TokenIds().to_dict())  # special ids of the LLaDA-8B tokenizer ([MASK] = mask)

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

  # Training (lladav_jax.train). Defaults are upstream's fine-tuning recipe (llada_v_finetune.sh);
  # configs/stage*.py hold the paper's stages.
  config.train = ConfigDict(dict(
      global_batch_size=256,  # samples per optimiser step, over all processes
      micro_batches=1,  # gradient accumulation: the global batch is scanned in this many parts
      num_steps=0,  # optimiser steps; 0 = num_epochs over the data source's length
      num_epochs=1,
      mask_eps=1e-3,  # p = (1 - eps) t + eps
      dialogue_causal=False,  # upstream --use_conversation_mask: turn-causal attention
      max_consecutive_skips=10,  # abort after this many non-finite steps in a row
      log_every=1,  # steps between metric writes
      peak_flops_per_device=0.0,  # for MFU; 0 = from the device kind (unknown kinds: no MFU)
      data_source="pipeline",  # "pipeline" (config.data, lladav_jax.data) or "synthetic" (smoke runs)
      tokenizer_dir="",  # the LLaDA tokenizer (tokenizer.json ...), for the pipeline
      # The synthetic source: random samples, every row padded to seq_len with max_crops crop slots.
      synthetic=ConfigDict(dict(num_examples=1024, image_fraction=0.5, seq_len=2048, max_crops=2)),
  ))
  # AdamW as HF's Trainer runs it; per-component learning rates (upstream --mm_vision_tower_lr etc.).
  config.optim = ConfigDict(dict(
      trainable=("vision", "projector", "language"),  # the rest is frozen (upstream mm_tunable_parts)
      lr=1e-5,  # language model and image newline; the default for the others
      vision_lr=2e-6,
      projector_lr=config_dict.placeholder(float),  # unset: lr
      b1=0.9,
      b2=0.999,
      eps=1e-8,
      weight_decay=0.0,
      max_grad_norm=1.0,
      warmup_ratio=0.03,  # cosine schedule with linear warmup over ceil(ratio * steps)
  ))
  config.checkpoint = ConfigDict(dict(
      every_steps=1000,
      keep=1,  # checkpoints kept in the workdir
      async_save=True,
      # Params at step 0 when the workdir has no checkpoint: a converted checkpoint directory
      # (tools/convert_weights) or a previous stage's workdir (its latest params). Empty: random init.
      init_from="",
  ))
  # The data pipeline (lladav_jax.data.DataConfig, all its fields; see docs/training.md). The train
  # loop sets batch_size to this process's rows of train.global_batch_size. Recipes set the sources.
  config.data = data_defaults()
  return config

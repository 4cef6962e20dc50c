"""LLaDA-V as published: LLaDA-8B + SigLIP2 so400m-patch14-384 + mlp2x_gelu, anyres_max_4.

Every key the code reads is declared here; stage configs import this and change what differs. The
model, compute and data sections are the dataclasses' own fields and defaults (their meaning is
documented there: lladav_jax/model_config.py, lladav_jax/models/compute.py, lladav_jax/data/config.py).
"""

from ml_collections import ConfigDict, config_dict

from lladav_jax import run_config, sharding
from lladav_jax.data.config import data_section
from lladav_jax.diffusion.loss import MASK_EPS
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lora import LoraConfig


def get_config() -> ConfigDict:
  config = ConfigDict()
  config.seed = 0

  # The published model (text, vision, projector_type, image handling, special ids, ...).
  config.model = run_config.model_section(LLaDAVConfig())
  config.model.max_length = 8192  # spliced sequence length (16384 for OneVision-stage data)

  # How the model computes (not part of the checkpoint); remat_policy: models.compute.REMAT_POLICIES,
  # attention_impl: models.compute.ATTENTION_IMPLS. Blockwise attention and a chunked loss keep the
  # [L, L] scores and [L, vocab] logits out of memory on every backend (docs/scaling.md); on TPU
  # "splash" and on GPU "cudnn" are the fused kernels.
  config.compute = run_config.compute_section(ComputeConfig(dtype="bfloat16", remat_policy="full",
                                                            attention_impl="blockwise", loss_chunk=1024))

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
      mask_eps=MASK_EPS,  # p = (1 - eps) t + eps
      dialogue_causal=False,  # upstream --use_conversation_mask: turn-causal attention
      # LaViDa's complementary masking: each sample is also trained on the complement of its mask
      # (a second view with p -> 1 - p), so every response token is supervised once per step.
      complementary_masking=False,
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
  # LoRA / QLoRA (lladav_jax/models/lora.py, all LoraConfig's fields): with `enabled` only the adapters
  # train (those in optim.trainable's components); the base is frozen, quantised with base_quantization.
  config.lora = run_config.lora_section(LoraConfig())
  config.checkpoint = ConfigDict(dict(
      every_steps=1000,
      keep=1,  # checkpoints kept in the workdir
      async_save=True,
      # Params at step 0 when the workdir has no checkpoint: anything load_pretrained reads (a
      # converted checkpoint, a LLaDA-V Hugging Face directory, a previous stage's workdir). Empty: random
      # init; unset (None, the fine-tuning recipes): the run refuses to start until it is given.
      init_from="",
  ))
  # The data pipeline (lladav_jax.data.DataConfig, all its fields; see docs/training.md). The train
  # loop sets batch_size to this process's rows of train.global_batch_size. Recipes set the sources.
  config.data = ConfigDict(data_section())
  return config

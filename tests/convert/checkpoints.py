"""Tiny checkpoints in each real Hugging Face layout, built from independent models.

The language tower is transformers' Llama with random weights; its state dict is renamed into each
LLaDA layout here, by a table written from the published key lists (not with the code under test).
The vision tower is transformers' SiglipVisionModel / SiglipModel saved by transformers itself. The
LLaDA-V layout is assembled the way upstream saves it (vision tower with its last layer deleted).
Shards are written with safetensors' own numpy writer, or with torch.save as PyTorch `.bin` files
(transformers' names: pytorch_model-0000i-of-0000N.bin), plus a hand-written index.
"""

import json
import pathlib

import ml_dtypes
import numpy as np
import torch
from safetensors.numpy import save_file

from tests import tiny

CONFIG = tiny.LLADAV
VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."

# The llava_llada config.json fields upstream writes (tiny dims); mm_vision_tower is filled in.
LLADAV_CONFIG_JSON = {
    "architectures": ["LlavaLLaDAModelLM"], "model_type": "llava_llada",
    "vocab_size": 96, "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
    "num_attention_heads": 4, "num_key_value_heads": 4, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
    "max_position_embeddings": 16384, "hidden_act": "silu", "attention_bias": False, "rope_scaling": None,
    "tie_word_embeddings": False, "eos_token_id": 126081, "bos_token_id": 126080, "pad_token_id": None,
    "mm_hidden_size": 16, "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch", "mm_patch_merge_type": "spatial_unpad",
    "image_aspect_ratio": "anyres_max_4", "image_grid_pinpoints": "(1x1),...,(6x6)",
    "mm_newline_position": "grid", "mm_spatial_pool_mode": "bilinear", "tokenizer_model_max_length": 4096,
    "tokenizer_padding_side": "right", "use_mm_proj": True, "torch_dtype": "bfloat16",
    "mm_tunable_parts": "mm_vision_tower,mm_mlp_adapter,mm_language_model",
}

# LLaMA layout -> the original LLaDA-8B layout (per layer, then model level), from the published keys.
ORIGINAL_LAYER_NAMES = {
    "self_attn.q_proj.weight": "q_proj.weight", "self_attn.k_proj.weight": "k_proj.weight",
    "self_attn.v_proj.weight": "v_proj.weight", "self_attn.o_proj.weight": "attn_out.weight",
    "mlp.gate_proj.weight": "ff_proj.weight", "mlp.up_proj.weight": "up_proj.weight",
    "mlp.down_proj.weight": "ff_out.weight", "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ff_norm.weight",
}
ORIGINAL_MODEL_NAMES = {"model.embed_tokens.weight": "model.transformer.wte.weight",
                        "model.norm.weight": "model.transformer.ln_f.weight",
                        "lm_head.weight": "model.transformer.ff_out.weight"}

# The original LLaDA config.json schema (OLMo-style keys), tiny dims.
ORIGINAL_LLADA_CONFIG_JSON = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 32,
    "embedding_dropout": 0.0, "embedding_size": 96, "eos_token_id": 126081, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 126336, "max_sequence_length": 4096, "mlp_hidden_size": 48,
    "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None, "n_heads": 4, "n_kv_heads": 4,
    "n_layers": 2, "pad_token_id": 126081, "precision": "amp_bf16", "residual_dropout": 0.0,
    "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True, "rope_theta": 500000.0,
    "scale_logits": False, "use_cache": False, "vocab_size": 96, "weight_tying": False,
}

# The renamed LLaMA-style LLaDA config (upstream's llada_v_prepare/files/config.json), tiny dims.
LLAMA_STYLE_LLADA_CONFIG_JSON = {
    "architectures": ["LLaDAModelLM"], "attention_bias": False, "attention_dropout": 0.0,
    "bos_token_id": 128000, "eos_token_id": 126081, "hidden_act": "silu", "hidden_size": 32,
    "initializer_range": 0.02, "intermediate_size": 48, "max_position_embeddings": 16384, "model_type": "llada",
    "num_attention_heads": 4, "num_hidden_layers": 2, "num_key_value_heads": 4, "pretraining_tp": 1,
    "rms_norm_eps": 1e-05, "rope_scaling": None, "rope_theta": 500000.0, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "use_cache": False, "vocab_size": 96,
}

# Tokenizer files as checkpoints carry them; tokenizer.json places the special tokens in the tiny vocab.
TOKENIZER_FILES = {"tokenizer_config.json": '{"model_max_length": 4096}',
                   "special_tokens_map.json": '{"eos_token": "<|endoftext|>"}',
                   "tokenizer.json": tiny.tokenizer_json()}


def to_torch(value: np.ndarray) -> torch.Tensor:
  """A numpy array as a torch tensor of the same dtype (bfloat16 through its bits)."""
  if value.dtype == ml_dtypes.bfloat16:
    return torch.from_numpy(np.ascontiguousarray(value).view(np.int16)).view(torch.bfloat16)
  return torch.from_numpy(np.ascontiguousarray(value))


def write_sharded(directory: pathlib.Path, state: dict[str, np.ndarray], config: dict, shards: int = 2,
                  fmt: str = "safetensors") -> None:
  """Writes a checkpoint as HF does: shards + their index + config.json; `fmt` "bin" writes them
  with torch.save (pytorch_model-0000i-of-0000N.bin + pytorch_model.bin.index.json)."""
  directory.mkdir(parents=True, exist_ok=True)
  keys = sorted(state)
  weight_map = {}
  for i in range(shards):
    members = keys[i::shards]
    if fmt == "bin":
      name = f"pytorch_model-{i + 1:05d}-of-{shards:05d}.bin"
      torch.save({k: to_torch(state[k]) for k in members}, directory / name)
    else:
      name = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
      save_file({k: np.ascontiguousarray(state[k]) for k in members}, str(directory / name),
                metadata={"format": "pt"})
    weight_map.update({k: name for k in members})
  total = sum(v.nbytes for v in state.values())
  index = "pytorch_model.bin.index.json" if fmt == "bin" else "model.safetensors.index.json"
  (directory / index).write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
  (directory / "config.json").write_text(json.dumps(config))
  for name, text in TOKENIZER_FILES.items():
    (directory / name).write_text(text)


def bf16(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """What a bf16 checkpoint stores (torch rounds to nearest even, as ml_dtypes does)."""
  return {k: torch.from_numpy(v).to(torch.bfloat16).view(torch.int16).numpy().view(ml_dtypes.bfloat16)
          for k, v in state.items()}


def lladav_state(ref, *, full_tower: bool = False) -> dict[str, np.ndarray]:
  """The LLaDA-V layout of a parity `Reference`'s towers (its Llama, SigLIP, projector, newline):
  as published (last vision layer deleted, no pooling head) unless `full_tower`."""
  state = tiny.state_dict_numpy(ref.llama)
  last = CONFIG.vision.num_hidden_layers - 1
  for k, v in tiny.state_dict_numpy(ref.siglip).items():
    if full_tower or not (k.startswith(f"encoder.layers.{last}.") or k.startswith("head.")):
      state[VISION_PREFIX + k] = v
  state.update(tiny.state_dict_numpy(ref.projector, "model.mm_projector."))
  state["model.image_newline"] = ref.newline.numpy()
  return state


def original_llada_state(llama) -> dict[str, np.ndarray]:
  """A transformers Llama's state dict renamed into the original LLaDA-8B layout."""
  state = {}
  for k, v in tiny.state_dict_numpy(llama).items():
    if k in ORIGINAL_MODEL_NAMES:
      state[ORIGINAL_MODEL_NAMES[k]] = v
      continue
    _, _, layer, rest = k.split(".", 3)  # model.layers.N.<rest>
    state[f"model.transformer.blocks.{layer}.{ORIGINAL_LAYER_NAMES[rest]}"] = v
  return state


def write_vision_tower_config(directory: pathlib.Path) -> pathlib.Path:
  """The tower's own config.json, where a local mm_vision_tower path would point."""
  directory.mkdir(parents=True, exist_ok=True)
  (directory / "config.json").write_text(json.dumps(tiny_siglip_config_json()))
  return directory


def tiny_siglip_config_json() -> dict:
  v = CONFIG.vision
  return {"model_type": "siglip_vision_model", "hidden_size": v.hidden_size, "intermediate_size": v.intermediate_size,
          "num_hidden_layers": v.num_hidden_layers, "num_attention_heads": v.num_attention_heads,
          "image_size": v.image_size, "patch_size": v.patch_size, "layer_norm_eps": v.layer_norm_eps,
          "hidden_act": "gelu_pytorch_tanh", "num_channels": 3}


def write_lladav(directory: pathlib.Path, state: dict[str, np.ndarray], shards: int = 3, fmt: str = "safetensors",
                 **config_overrides):
  """A LLaDA-V checkpoint whose mm_vision_tower is a local directory with the tower's config.json."""
  tower = write_vision_tower_config(directory.parent / f"{directory.name}-tower")
  config = {**LLADAV_CONFIG_JSON, "mm_vision_tower": str(tower), **config_overrides}
  write_sharded(directory, state, config, shards, fmt)
  return directory

"""Module configs: reading and writing the upstream config.json, and their validation."""

import dataclasses
import json
import re

import pytest

from lladav_jax.model_config import LLaDAConfig, LLaDAVConfig, ProjectorConfig, SiglipConfig, parse_grid_pinpoints
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.tokens import TokenIds

# The fields of the published LLaDA-V config.json that the model depends on (upstream writes them
# from the LLaDA config and the training arguments).
UPSTREAM_CONFIG = {
    "architectures": ["LlavaLLaDAModelLM"], "model_type": "llava_llada",
    "vocab_size": 126464, "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 32,
    "num_attention_heads": 32, "num_key_value_heads": 32, "rope_theta": 500000.0, "rms_norm_eps": 1e-05,
    "max_position_embeddings": 16384, "hidden_act": "silu", "attention_bias": False, "rope_scaling": None,
    "tie_word_embeddings": False, "eos_token_id": 126081, "bos_token_id": 126080, "pad_token_id": None,
    "initializer_range": 0.02,
    "mm_vision_tower": "google/siglip2-so400m-patch14-384", "mm_hidden_size": 1152,
    "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
    "mm_patch_merge_type": "spatial_unpad", "image_aspect_ratio": "anyres_max_4",
    "image_grid_pinpoints": [[384 * i, 384 * j] for i in range(1, 7) for j in range(1, 7)],
    "mm_newline_position": "grid", "mm_spatial_pool_mode": "bilinear", "tokenizer_model_max_length": 8192,
    "tokenizer_padding_side": "right", "use_mm_proj": True,
}


def test_reads_the_published_config():
  config = LLaDAVConfig.from_hf_config(UPSTREAM_CONFIG)
  assert config.text == LLaDAConfig()  # the defaults are LLaDA-8B
  assert config.text.head_dim == 128
  assert config.vision == SiglipConfig()  # so400m-patch14-384, known by name
  assert config.vision.num_patches == 729
  assert config.projector == ProjectorConfig("mlp2x_gelu", 1152, 4096)
  assert config.vision_feature_depth == 26  # 27 layers, penultimate output
  assert config.anyres_max_tiles == 4
  assert len(config.image_grid_pinpoints) == 36
  assert config.image_grid_pinpoints[:2] == ((384, 384), (384, 768))  # (width, height), width-major
  assert config.max_length == 8192


def test_round_trips_through_config_json():
  config = LLaDAVConfig.from_hf_config(UPSTREAM_CONFIG)
  written = json.loads(json.dumps(config.to_hf_config()))
  for key, value in UPSTREAM_CONFIG.items():
    assert written[key] == value, key
  assert LLaDAVConfig.from_hf_config(written) == config
  # Towers on their own, too.
  assert LLaDAConfig.from_hf_config(config.text.to_hf_config()) == config.text
  assert SiglipConfig.from_hf_config(config.vision.to_hf_config()) == config.vision


def test_vision_dims_from_the_towers_own_config():
  tiny_tower = SiglipConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2)
  hf = dict(UPSTREAM_CONFIG, mm_vision_tower="/local/my-siglip", mm_hidden_size=32)
  with pytest.raises(ValueError, match="unknown tower"):
    LLaDAVConfig.from_hf_config(hf)
  full_siglip_config = {"model_type": "siglip", "vision_config": tiny_tower.to_hf_config()}
  config = LLaDAVConfig.from_hf_config(hf, vision_config=full_siglip_config)
  assert config.vision == tiny_tower
  assert config.vision_feature_depth == 2


def test_grid_pinpoints_range_string_is_expanded_like_upstream():
  assert parse_grid_pinpoints("(1x1),...,(2x3)", 384) == (
      (384, 384), (384, 768), (384, 1152), (768, 384), (768, 768), (768, 1152))
  assert parse_grid_pinpoints([[384, 768]], 384) == ((384, 768),)


@pytest.mark.parametrize("key,value,match", [
    ("model_type", "llava_llama", "llava_llada"),
    ("rope_scaling", {"type": "linear", "factor": 2.0}, "rope_scaling"),
    ("hidden_act", "gelu", "hidden_act"),
    ("tie_word_embeddings", True, "tie_word_embeddings"),
    ("mm_projector_type", "pooler", "mm_projector_type"),
    ("image_aspect_ratio", "highres", "image_aspect_ratio"),
    ("mm_patch_merge_type", "spatial_unpad_maxpool2x2", "mm_patch_merge_type"),
    ("mm_spatial_pool_mode", "max", "mm_spatial_pool_mode"),
    ("image_grid_pinpoints", [[384, 500]], "multiple of the crop size"),
    ("mm_vision_select_layer", -30, "mm_vision_select_layer"),
    ("mm_hidden_size", 1024, "in_features"),
])
def test_unsupported_values_are_named(key, value, match):
  with pytest.raises(ValueError, match=match):
    LLaDAVConfig.from_hf_config(dict(UPSTREAM_CONFIG, **{key: value}))


def test_bad_dims_and_choices_are_named():
  with pytest.raises(ValueError, match="num_attention_heads"):
    LLaDAConfig(hidden_size=100, num_attention_heads=3)
  with pytest.raises(ValueError, match="num_key_value_heads"):
    LLaDAConfig(num_attention_heads=32, num_key_value_heads=5)
  with pytest.raises(ValueError, match="remat_policy"):
    ComputeConfig(remat_policy="everything")
  with pytest.raises(ValueError, match="out_features"):
    dataclasses.replace(LLaDAVConfig(), projector=ProjectorConfig(out_features=8))
  # Special ids past the embedding table (e.g. [MASK]) would be clamped silently by the lookup.
  small = LLaDAConfig(vocab_size=512, hidden_size=64, intermediate_size=128, num_attention_heads=4,
                      num_key_value_heads=4)
  with pytest.raises(ValueError, match="special token bos has id 126080, outside the vocabulary of 512"):
    dataclasses.replace(LLaDAVConfig(), text=small, projector=ProjectorConfig(out_features=64))


def test_special_ids_from_the_tokenizer_or_the_config(tmp_path):
  from tests.data.tiny_tokenizer import save_tokenizer_dir  # LLaDA's layout: 126349 entries
  path = save_tokenizer_dir(str(tmp_path / "tok"))
  assert TokenIds.from_tokenizer_json(f"{path}/tokenizer.json") == TokenIds()
  assert TokenIds.from_config_json({"mask_token_id": 7}) == TokenIds(mask=7)
  assert TokenIds.from_config_json({TokenIds.HF_KEY: {"mask": 3, "eot": 4}, "mask_token_id": 7}) == \
      TokenIds(mask=3, eot=4)
  (tmp_path / "bad.json").write_text('{"added_tokens": [{"id": 1, "content": "<|eot_id|>"}]}')
  with pytest.raises(ValueError, match=re.escape("bad.json: no token '<|startoftext|>'")):
    TokenIds.from_tokenizer_json(tmp_path / "bad.json")

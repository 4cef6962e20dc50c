"""Assembling a stage-1 initialisation from LLaDA-8B (both layouts) and SigLIP (both key styles):
each tower computes what its transformers model computes; projector and newline are seeded."""

import dataclasses
import json

import jax
import numpy as np
import pytest
import torch
from transformers import SiglipConfig as HFSiglipConfig
from transformers import SiglipModel

from lladav_jax import load_pretrained
from lladav_jax.convert import __main__ as cli
from lladav_jax.convert import layouts
from lladav_jax.convert import operations as convert
from lladav_jax.convert.problems import ConversionError
from lladav_jax.model_config import LLaDAConfig
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.models.siglip import SiglipVisionTower
from tests import tiny
from tests.convert import checkpoints

TEXT, VISION = tiny.TEXT, tiny.VISION
# float32; a 2-layer tower per model, values O(1) (see tests/parity: measured ~1e-6).
ATOL = 1e-5

# The published LLaDA-8B-Instruct config.json (GSAI-ML/LLaDA-8B-Instruct), verbatim.
LLADA_8B_INSTRUCT_CONFIG = {
    "activation_type": "silu", "alibi": False, "alibi_bias_max": 8.0, "architectures": ["LLaDAModelLM"],
    "attention_dropout": 0.0, "attention_layer_norm": False, "attention_layer_norm_with_affine": True,
    "auto_map": {"AutoConfig": "configuration_llada.LLaDAConfig",
                 "AutoModelForCausalLM": "modeling_llada.LLaDAModelLM", "AutoModel": "modeling_llada.LLaDAModelLM"},
    "bias_for_layer_norm": False, "block_group_size": 1, "block_type": "llama", "d_model": 4096,
    "embedding_dropout": 0.0, "embedding_size": 126464, "eos_token_id": 126081, "flash_attention": False,
    "include_bias": False, "include_qkv_bias": False, "init_cutoff_factor": None, "init_device": "meta",
    "init_fn": "mitchell", "init_std": 0.02, "input_emb_norm": False, "layer_norm_type": "rms",
    "layer_norm_with_affine": True, "mask_token_id": 126336, "max_sequence_length": 4096,
    "mlp_hidden_size": 12288, "mlp_ratio": 4, "model_type": "llada", "multi_query_attention": None,
    "n_heads": 32, "n_kv_heads": 32, "n_layers": 32, "pad_token_id": 126081, "precision": "amp_bf16",
    "residual_dropout": 0.0, "rms_norm_eps": 1e-05, "rope": True, "rope_full_precision": True,
    "rope_theta": 500000.0, "scale_logits": False, "transformers_version": "4.46.3", "use_cache": False,
    "vocab_size": 126464, "weight_tying": False,
}


def _llama_logits(llama, ids):
  with torch.no_grad():
    full = torch.ones(1, 1, ids.shape[1], ids.shape[1], dtype=torch.bool)
    return llama(input_ids=torch.from_numpy(ids), attention_mask=full).logits.numpy()


def _our_logits(config, params, ids):
  model = LLaDAV(config, tiny.F32)
  return np.asarray(jax.jit(lambda p, i: model.apply(p, i))({"params": params}, ids))


def _our_vision_features(config, params, pixels):
  """The vision tower's output at the selected layer (what feeds the projector)."""
  tower = SiglipVisionTower(config.vision, tiny.F32, num_layers=config.vision_feature_depth)
  out = tower.apply({"params": params["vision_tower"]}, pixels)
  return np.asarray(out["last_hidden_state"])


def _check_towers(config, params, llama, hf_vision):
  ids = np.random.default_rng(0).integers(0, TEXT.vocab_size, size=(1, 9))
  np.testing.assert_allclose(_our_logits(config, params, ids), _llama_logits(llama, ids), atol=ATOL, rtol=1e-4)
  pixels = np.random.default_rng(1).uniform(-1, 1, size=(1, 384, 384, 3)).astype(np.float32)
  with torch.no_grad():
    hidden = hf_vision(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2), output_hidden_states=True)
  np.testing.assert_allclose(_our_vision_features(config, params, pixels), hidden.hidden_states[-2].numpy(),
                             atol=ATOL, rtol=1e-5)


def _full_siglip_model(seed=2):
  """transformers' SiglipModel (text tower, vision tower with pooling head), as hub checkpoints hold."""
  torch.manual_seed(seed)
  config = HFSiglipConfig(
      text_config=dict(vocab_size=50, hidden_size=16, intermediate_size=24, num_hidden_layers=1,
                       num_attention_heads=2, max_position_embeddings=16),
      vision_config=dict(hidden_size=VISION.hidden_size, intermediate_size=VISION.intermediate_size,
                         num_hidden_layers=VISION.num_hidden_layers, num_attention_heads=VISION.num_attention_heads,
                         image_size=VISION.image_size, patch_size=VISION.patch_size,
                         layer_norm_eps=VISION.layer_norm_eps))
  return tiny.randomize(SiglipModel(config).eval())


def test_original_llada_layout_and_full_siglip_model(tmp_path, capsys):
  llama = tiny.hf_llama(TEXT, seed=1)
  checkpoints.write_sharded(tmp_path / "llada", checkpoints.original_llada_state(llama),
                            checkpoints.ORIGINAL_LLADA_CONFIG_JSON, shards=3)
  siglip = _full_siglip_model()
  siglip.save_pretrained(tmp_path / "siglip")
  assert cli.run(["assemble", "--llada", str(tmp_path / "llada"), "--siglip", str(tmp_path / "siglip"),
                  str(tmp_path / "out"), "--quiet", "--seed", "3"]) == 0
  summary = capsys.readouterr().out
  config, params = load_pretrained(tmp_path / "out")
  assert config.text == dataclasses.replace(TEXT, max_position_embeddings=4096, pad_token_id=126081)
  assert config.vision == VISION and config.vision_feature_depth == 2
  _check_towers(config, params, llama, siglip.vision_model)
  assert "SigLIP text tower" in summary and "vision layer 2: past the selected layer" in summary
  assert "vision pooling head" in summary
  info = json.loads((tmp_path / "out" / "lladav_checkpoint.json").read_text())
  assert info["source"]["llada_layout"] == "LLaDA (original layout)" and info["source"]["seed"] == 3
  # The fresh leaves are the seeded initialisation, bit for bit.
  fresh = {leaf.path: leaf.load() for leaf in convert.initial_leaves(
      config, {("mm_projector", "linear_1", "kernel"): (16, 32), ("mm_projector", "linear_1", "bias"): (32,),
               ("mm_projector", "linear_2", "kernel"): (32, 32), ("mm_projector", "linear_2", "bias"): (32,),
               ("image_newline",): (32,)}, seed=3, dtype=None)}
  np.testing.assert_array_equal(params["image_newline"], fresh[("image_newline",)])
  np.testing.assert_array_equal(params["mm_projector"]["linear_2"]["kernel"],
                                fresh[("mm_projector", "linear_2", "kernel")])


def test_llama_style_llada_layout_and_transformers5_vision_model(tmp_path):
  llama = tiny.hf_llama(TEXT, seed=5)
  checkpoints.write_sharded(tmp_path / "llada", tiny.state_dict_numpy(llama), checkpoints.LLAMA_STYLE_LLADA_CONFIG_JSON)
  siglip = tiny.hf_siglip(VISION, seed=6)
  siglip.save_pretrained(tmp_path / "siglip", max_shard_size="50KB")  # keys without "vision_model."
  result = convert.assemble(tmp_path / "llada", tmp_path / "siglip", tmp_path / "out", progress=False)
  assert result.plan.notes == ["mm_projector and image_newline are freshly initialised (seed 0)"]
  config, params = load_pretrained(tmp_path / "out")
  assert config.vision_tower_name == str((tmp_path / "siglip").resolve())
  assert config.image_aspect_ratio == "anyres_max_4" and config.patch_merge_type == "spatial_unpad"
  _check_towers(config, params, llama, siglip)


def test_initialisation_follows_upstream_distributions_and_the_seed():
  shapes = {("mm_projector", "linear_1", "kernel"): (1152, 4096), ("mm_projector", "linear_1", "bias"): (4096,),
            ("mm_projector", "linear_2", "kernel"): (4096, 4096), ("mm_projector", "linear_2", "bias"): (4096,),
            ("image_newline",): (4096,)}
  config = dataclasses.replace(tiny.LLADAV)  # only the projector depth (2) is read

  def values(seed):
    return {leaf.path: leaf.load() for leaf in convert.initial_leaves(config, shapes, seed, None)}
  a, b, c = values(0), values(0), values(1)
  for path in shapes:
    np.testing.assert_array_equal(a[path], b[path])
    assert not np.array_equal(a[path], c[path]), path
  # torch nn.Linear default: weight and bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
  for n, fan_in in ((1, 1152), (2, 4096)):
    for kind in ("kernel", "bias"):
      x = a[("mm_projector", f"linear_{n}", kind)]
      bound = 1 / np.sqrt(fan_in)
      assert np.abs(x).max() <= bound and np.abs(x).max() > 0.99 * bound
      assert abs(x.std() - bound / np.sqrt(3)) < 0.05 * bound / np.sqrt(3)  # std of U(-b, b)
  # upstream: randn(width) / sqrt(width); 4096 samples give the std within ~5%.
  assert abs(a[("image_newline",)].std() * np.sqrt(4096) - 1) < 0.05


def test_original_config_translation():
  assert layouts.llada_config_from_original(LLADA_8B_INSTRUCT_CONFIG) == dataclasses.replace(
      LLaDAConfig(), max_position_embeddings=4096, pad_token_id=126081)
  for change, culprit in [({"weight_tying": True}, "weight_tying = True"),
                          ({"block_type": "sequential"}, "block_type = 'sequential'"),
                          ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "rope_scaling"),
                          ({"include_bias": True}, "include_bias = True")]:
    with pytest.raises(ValueError, match=culprit):
      layouts.llada_config_from_original({**LLADA_8B_INSTRUCT_CONFIG, **change})
  # Absent keys take OLMo's defaults, which this model does not support: said, not guessed.
  without = {k: v for k, v in LLADA_8B_INSTRUCT_CONFIG.items() if k != "block_type"}
  with pytest.raises(ValueError, match="block_type = 'sequential'"):
    layouts.llada_config_from_original(without)


def test_lladav_config_whose_text_dims_disagree_is_refused(tmp_path):
  llama = tiny.hf_llama(TEXT, seed=1)
  checkpoints.write_sharded(tmp_path / "llada", tiny.state_dict_numpy(llama), checkpoints.LLAMA_STYLE_LLADA_CONFIG_JSON)
  tiny.hf_siglip(VISION).save_pretrained(tmp_path / "siglip")
  wrong = tmp_path / "lladav_config.json"
  wrong.write_text(json.dumps(dict(checkpoints.LLADAV_CONFIG_JSON, intermediate_size=64, mm_vision_tower="x")))
  with pytest.raises(ValueError, match="intermediate_size: 64 in lladav_config.json, 48 in the LLaDA config"):
    convert.assemble(tmp_path / "llada", tmp_path / "siglip", tmp_path / "out", lladav_config=wrong, progress=False)
  assert not (tmp_path / "out").exists()


def _stage1_run(directory, projector, *, prefix="model.", newline=None, **config):
  """What upstream's stage 1 leaves: config.json and torch.save of the projector's named parameters."""
  directory.mkdir(parents=True)
  weights = {k: torch.from_numpy(v) for k, v in tiny.state_dict_numpy(projector, f"{prefix}mm_projector.").items()}
  if newline is not None:
    weights[f"{prefix}image_newline"] = torch.from_numpy(newline)
  torch.save(weights, directory / "mm_projector.bin")
  (directory / "config.json").write_text(json.dumps({**checkpoints.LLADAV_CONFIG_JSON, "mm_patch_merge_type": "flat",
                                                     "mm_tunable_parts": "mm_mlp_adapter", **config}))
  return directory


def test_stage1_projector_makes_a_stage2_checkpoint(tmp_path, capsys):
  llama, siglip = tiny.hf_llama(TEXT, seed=1), tiny.hf_siglip(VISION, seed=2)
  checkpoints.write_sharded(tmp_path / "llada", tiny.state_dict_numpy(llama), checkpoints.LLAMA_STYLE_LLADA_CONFIG_JSON)
  siglip.save_pretrained(tmp_path / "siglip")
  projector = tiny.hf_projector(tiny.PROJECTOR, seed=3)
  stage1 = _stage1_run(tmp_path / "exp" / "llada_v_pretrain", projector)
  assert cli.run(["assemble", "--llada", str(tmp_path / "llada"), "--siglip", str(tmp_path / "siglip"),
                  "--projector", str(stage1), "--seed", "4", str(tmp_path / "out"), "--quiet"]) == 0
  summary = capsys.readouterr().out
  assert "mm_projector from the stage-1 projector" in summary
  config, params = load_pretrained(tmp_path / "out")
  assert config.patch_merge_type == "spatial_unpad"  # stage 2's settings, not stage 1's flat merge
  _check_towers(config, params, llama, siglip)
  state = tiny.state_dict_numpy(projector)
  for n, index in ((1, 0), (2, 2)):  # nn.Sequential(Linear, GELU, Linear): HF [out, in] -> flax [in, out]
    np.testing.assert_array_equal(params["mm_projector"][f"linear_{n}"]["kernel"], state[f"{index}.weight"].T)
    np.testing.assert_array_equal(params["mm_projector"][f"linear_{n}"]["bias"], state[f"{index}.bias"])
  # The image-newline: stage 1 has none; stage 2 creates it as upstream does, from the seed.
  fresh = convert.initial_leaves(config, {("mm_projector", "linear_1", "kernel"): (16, 32),
                                          ("mm_projector", "linear_1", "bias"): (32,),
                                          ("mm_projector", "linear_2", "kernel"): (32, 32),
                                          ("mm_projector", "linear_2", "bias"): (32,), ("image_newline",): (32,)},
                                 seed=4, dtype=None)
  np.testing.assert_array_equal(params["image_newline"], next(l.load() for l in fresh if l.path == ("image_newline",)))
  info = json.loads((tmp_path / "out" / "lladav_checkpoint.json").read_text())
  assert info["source"]["projector"] == str((stage1 / "mm_projector.bin").resolve())
  assert info["notes"][-1] == "image_newline is freshly initialised (seed 4), as upstream's stage 2 does"

  # Keys without the model. prefix, an image-newline in the file, the file named directly.
  newline = np.random.default_rng(5).standard_normal(TEXT.hidden_size).astype(np.float32)
  bare = _stage1_run(tmp_path / "bare", projector, prefix="", newline=newline)
  result = convert.assemble(tmp_path / "llada", tmp_path / "siglip", tmp_path / "out2",
                            projector=bare / "mm_projector.bin", progress=False)
  params2 = load_pretrained(tmp_path / "out2").params
  np.testing.assert_array_equal(params2["image_newline"], newline)
  np.testing.assert_array_equal(params2["mm_projector"]["linear_2"]["kernel"], state["2.weight"].T)
  assert result.plan.notes[-1] == f"image_newline from {bare / 'mm_projector.bin'}"


def test_a_stage1_projector_that_does_not_fit_is_refused(tmp_path):
  llama = tiny.hf_llama(TEXT, seed=1)
  checkpoints.write_sharded(tmp_path / "llada", tiny.state_dict_numpy(llama), checkpoints.LLAMA_STYLE_LLADA_CONFIG_JSON)
  tiny.hf_siglip(VISION).save_pretrained(tmp_path / "siglip")
  wide = tiny.hf_projector(dataclasses.replace(tiny.PROJECTOR, out_features=64))
  stage1 = _stage1_run(tmp_path / "wide", wide, mm_projector_type="linear")
  with pytest.raises(ConversionError) as raised:
    convert.assemble(tmp_path / "llada", tmp_path / "siglip", tmp_path / "out", projector=stage1, progress=False)
  problems = "\n".join(raised.value.problems)
  assert "mm_projector_type 'linear' in stage 1, but the assembled model's is 'mlp2x_gelu'" in problems
  assert "model.mm_projector.0.weight: shape [64, 16] in mm_projector.bin, but the config implies [32, 16]" in problems
  (tmp_path / "empty").mkdir()
  with pytest.raises(ConversionError, match="empty: no weights"):
    convert.assemble(tmp_path / "llada", tmp_path / "siglip", tmp_path / "out", projector=tmp_path / "empty",
                     progress=False)
  assert not (tmp_path / "out").exists()

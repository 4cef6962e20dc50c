"""Importing a LLaDA-V checkpoint: the converted model computes what the transformers reference
computes, for the published (truncated) tower and for a full one, in both layer layouts."""

import json
import os

import jax
import ml_dtypes
import numpy as np
import pytest

from lladav_jax import load_pretrained
from lladav_jax.convert import __main__ as cli
from lladav_jax.convert import operations as convert
from lladav_jax.convert.problems import ConversionError
from lladav_jax.images.crops import sample_visuals
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import build_sample, collate, model_inputs
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID
from tests import tiny
from tests.convert import checkpoints
from tests.parity.test_lladav_parity import Reference

# float32 end to end, as in tests/parity/test_lladav_parity.py: two towers and a bilinear resize
# whose torch weights differ by ~1e-5; logits are O(1).
ATOL = 5e-5


@pytest.fixture(scope="module")
def reference():
  return Reference()


@pytest.fixture(scope="module")
def f32_checkpoint(reference, tmp_path_factory):
  return checkpoints.write_lladav(tmp_path_factory.mktemp("f32") / "lladav",
                                  checkpoints.lladav_state(reference), torch_dtype="float32")


def _import(src, out, *args):
  assert cli.run(["import", str(src), str(out), "--quiet", *args]) == 0
  return out


def _flat(params):
  return {jax.tree_util.keystr(p): np.asarray(v) for p, v in jax.tree_util.tree_leaves_with_path(params)}


def _assert_bitwise_equal(a, b):
  fa, fb = _flat(a), _flat(b)
  assert fa.keys() == fb.keys()
  for key in fa:
    assert fa[key].dtype == fb[key].dtype and fa[key].shape == fb[key].shape, key
    assert fa[key].tobytes() == fb[key].tobytes(), key


def test_imported_model_matches_the_transformers_reference(reference, f32_checkpoint, tmp_path):
  out = _import(f32_checkpoint, tmp_path / "ckpt")
  config, params = load_pretrained(out)
  assert config.vision_feature_depth == 2 and config.vision.num_hidden_layers == 3  # tower dims from its dir
  ids, image = [5, 6, IMAGE_PLACEHOLDER_ID, 7, 8, 9], tiny.random_image(640, 360, seed=7)
  sample = build_sample(ids, sample_visuals([image], config), config)
  batch = collate([[sample]], sample.length, sample.num_crops, config)
  logits = jax.jit(LLaDAV(config, tiny.F32).apply)({"params": params}, **model_inputs(batch))
  np.testing.assert_allclose(np.asarray(logits)[0], reference.logits(ids, [image]), atol=ATOL, rtol=1e-4)

  # The Hugging Face directory loads directly to the very same arrays.
  _assert_bitwise_equal(load_pretrained(f32_checkpoint).params, params)
  info = json.loads((out / "lladav_checkpoint.json").read_text())
  assert info["scan_layers"] is True and info["num_source_tensors"] == 63
  # The on-disk format as docs/convert.md names it: checkpoints already written must keep loading.
  assert (info["format"], info["format_version"]) == ("lladav_jax.pretrained", 1)
  assert sorted((out / "tokenizer").iterdir()) == sorted(out / "tokenizer" / n for n in checkpoints.TOKENIZER_FILES)


def test_full_vision_tower_gives_the_same_params_and_reports_what_it_skipped(reference, f32_checkpoint, tmp_path,
                                                                              capsys):
  full = checkpoints.write_lladav(tmp_path / "full", checkpoints.lladav_state(reference, full_tower=True))
  truncated = _import(f32_checkpoint, tmp_path / "from_truncated")
  capsys.readouterr()
  from_full = _import(full, tmp_path / "from_full")
  summary = capsys.readouterr().out
  _assert_bitwise_equal(load_pretrained(from_full).params, load_pretrained(truncated).params)
  siglip_keys = tiny.state_dict_numpy(reference.siglip)
  last_layer = sum(k.startswith("encoder.layers.2.") for k in siglip_keys)
  head = sum(k.startswith("head.") for k in siglip_keys)
  assert f"skipped {last_layer} source key(s): vision layer 2: past the selected layer" in summary
  assert f"skipped {head} source key(s): vision pooling head" in summary


def test_unscanned_layout_holds_the_same_layers(f32_checkpoint, tmp_path):
  scanned = load_pretrained(_import(f32_checkpoint, tmp_path / "scan")).params
  loop_dir = _import(f32_checkpoint, tmp_path / "loop", "--no-scan")
  loop = load_pretrained(loop_dir, scan_layers=False).params
  for i in range(tiny.TEXT.num_hidden_layers):
    np.testing.assert_array_equal(loop["language_model"][f"layers_{i}"]["mlp"]["down_proj"]["kernel"],
                                  scanned["language_model"]["layers"]["mlp"]["down_proj"]["kernel"][i])
  np.testing.assert_array_equal(loop["vision_tower"]["encoder"]["layers_1"]["self_attn"]["out_proj"]["bias"],
                                scanned["vision_tower"]["encoder"]["layers"]["self_attn"]["out_proj"]["bias"][1])
  with pytest.raises(ValueError, match="converted with scan_layers=False"):
    load_pretrained(loop_dir)


def test_bfloat16_stays_bfloat16_bit_for_bit_and_casts_on_request(reference, tmp_path):
  state = checkpoints.bf16(checkpoints.lladav_state(reference))
  src = checkpoints.write_lladav(tmp_path / "bf16", state)
  params = load_pretrained(_import(src, tmp_path / "ckpt")).params
  assert {np.asarray(x).dtype for x in jax.tree.leaves(params)} == {np.dtype(ml_dtypes.bfloat16)}
  kernel = np.asarray(params["language_model"]["layers"]["mlp"]["gate_proj"]["kernel"])
  for i in range(tiny.TEXT.num_hidden_layers):  # HF Linear [out, in] -> flax [in, out]
    assert kernel[i].tobytes() == np.ascontiguousarray(state[f"model.layers.{i}.mlp.gate_proj.weight"].T).tobytes()
  conv = np.asarray(params["vision_tower"]["embeddings"]["patch_embedding"]["kernel"])
  hf_conv = state[checkpoints.VISION_PREFIX + "embeddings.patch_embedding.weight"]  # [out, in, kh, kw]
  assert conv.tobytes() == np.ascontiguousarray(hf_conv.transpose(2, 3, 1, 0)).tobytes()

  as_f32 = load_pretrained(_import(src, tmp_path / "f32", "--dtype", "float32")).params
  newline = np.asarray(as_f32["image_newline"])
  assert newline.dtype == np.float32
  np.testing.assert_array_equal(newline, state["model.image_newline"].astype(np.float32))
  # Casting at load time instead gives the same arrays.
  _assert_bitwise_equal(load_pretrained(tmp_path / "ckpt", dtype="float32").params, as_f32)


def test_dry_run_prints_the_mapping_and_writes_nothing(f32_checkpoint, tmp_path, capsys):
  assert cli.run(["import", str(f32_checkpoint), str(tmp_path / "never"), "--dry-run"]) == 0
  table = capsys.readouterr().out
  assert not (tmp_path / "never").exists()
  row = next(line for line in table.splitlines() if line.startswith("language_model/layers/mlp/gate_proj/kernel"))
  assert row.split()[1:4] == ["2x32x48", "float32", "model.layers.{0..1}.mlp.gate_proj.weight"]
  assert "transposed" in row
  assert "vision_tower/embeddings/patch_embedding/kernel" in table and "conv OIHW->HWIO" in table


def test_flat_merge_checkpoint_may_lack_the_newline_vector(reference, tmp_path):
  """Upstream creates image_newline only for 'unpad' merge types; with 'flat' it never exists."""
  state = checkpoints.lladav_state(reference)
  del state["model.image_newline"]
  src = checkpoints.write_lladav(tmp_path / "flat", state, mm_patch_merge_type="flat")
  result = convert.import_lladav(src, tmp_path / "ckpt", progress=False)
  assert any(note.startswith("image_newline: not in the LLaDA-V checkpoint; zeros") for note in result.plan.notes)
  config, params = load_pretrained(tmp_path / "ckpt")
  assert config.patch_merge_type == "flat"
  np.testing.assert_array_equal(params["image_newline"], np.zeros(tiny.TEXT.hidden_size, np.float32))
  # With spatial_unpad the same absence is an error.
  src = checkpoints.write_lladav(tmp_path / "unpad", state)
  with pytest.raises(ConversionError, match="model.image_newline: missing from the LLaDA-V checkpoint"):
    convert.import_lladav(src, tmp_path / "never", progress=False)


def test_relative_paths(f32_checkpoint, tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  assert cli.run(["import", os.path.relpath(f32_checkpoint), "ckpt", "--quiet"]) == 0
  assert cli.run(["export", "ckpt", "exported", "--quiet"]) == 0
  assert load_pretrained("ckpt").config == load_pretrained("exported").config

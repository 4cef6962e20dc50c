"""Adapters out: PEFT loads the exported adapter onto transformers' Llama (upstream's module names)
and gives the project's logits; the merged export equals PEFT's own merge_and_unload."""

import copy

import jax
import numpy as np
import peft
import pytest
import torch
from flax import traverse_util
from safetensors.numpy import load_file

from lladav_jax.checkpoints.pretrained import load_pretrained
from lladav_jax.convert import __main__ as convert_cli
from lladav_jax.convert import adapter_dir, peft_export
from lladav_jax.convert import operations as convert
from lladav_jax.convert.problems import ConversionError
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.llada import LLaDAModel, default_positions
from lladav_jax.models.lora import LoraConfig
from tests.convert import checkpoints
from tests.convert.test_export import _read_all
from tests.parity.test_lladav_parity import Reference

LORA = LoraConfig(rank=4, alpha=12.0, targets=("q_proj", "v_proj", "o_proj", "up_proj", "down_proj"))
ATOL = 1e-5  # float32 on both sides, as the parity tests


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
  """(reference towers, converted float32 checkpoint, adapters dir, PEFT dir, the adapters)."""
  root = tmp_path_factory.mktemp("adapters")
  ref = Reference()
  src = checkpoints.write_lladav(root / "lladav", checkpoints.lladav_state(ref))
  assert convert_cli.run(["import", str(src), str(root / "ckpt"), "--quiet"]) == 0
  loaded = load_pretrained(root / "ckpt")
  info = adapter_dir.AdapterInfo(LORA, True, str(root / "ckpt"), loaded.config)
  rng = np.random.default_rng(0)
  leaves = {p: rng.normal(0, 0.3, shape).astype(np.float32) for p, shape in adapter_dir.expected_shapes(info).items()}
  adapter_dir.save(root / "adapters", leaves, lora=LORA, scan_layers=True, base=info.base, config=loaded.config)
  lines = peft_export.export_peft(root / "adapters", root / "peft")
  assert "10 adapted modules" in lines[1]  # 5 targets x 2 layers
  return ref, root / "ckpt", root / "adapters", root / "peft", leaves, jax.device_get(loaded.params)


def our_language_logits(params, leaves, ids):
  text = traverse_util.flatten_dict(params["language_model"])
  text.update({p[1:]: v for p, v in leaves.items() if p[0] == "language_model"})
  model = LLaDAModel(checkpoints.CONFIG.text, ComputeConfig(lora=LORA))
  variables = {"params": traverse_util.unflatten_dict(text)}

  def run(ids):
    embeds = model.apply(variables, ids, method=LLaDAModel.embed)
    return model.apply(variables, embeds, default_positions(*ids.shape), None)
  return np.asarray(jax.jit(run)(ids))


def llama_logits(model, ids):
  with torch.no_grad():
    full = torch.ones(ids.shape[0], 1, ids.shape[1], ids.shape[1], dtype=torch.bool)
    return model(input_ids=torch.from_numpy(ids), attention_mask=full).logits.numpy()


def test_peft_loads_the_adapter_and_gives_the_projects_logits(exported):
  ref, _, _, peft_dir, leaves, params = exported
  ids = np.random.default_rng(1).integers(0, checkpoints.CONFIG.text.vocab_size, size=(2, 13))
  adapted = peft.PeftModel.from_pretrained(copy.deepcopy(ref.llama), str(peft_dir)).eval()
  expected = llama_logits(adapted, ids)
  np.testing.assert_allclose(our_language_logits(params, leaves, ids), expected, atol=ATOL, rtol=1e-4)
  assert np.abs(expected - llama_logits(ref.llama, ids)).max() > 100 * ATOL, "the adapters must matter"


def test_the_exported_names_are_peft_own(exported):
  ref, _, _, peft_dir, _, _ = exported
  own = peft.get_peft_model(copy.deepcopy(ref.llama), peft.LoraConfig(
      r=LORA.rank, lora_alpha=LORA.alpha, target_modules=list(LORA.targets)))
  ours = load_file(str(peft_dir / peft_export.PEFT_WEIGHTS_FILE))
  theirs = {k: v.shape for k, v in peft.get_peft_model_state_dict(own).items()}
  assert {k: v.shape for k, v in ours.items()} == {k: tuple(v) for k, v in theirs.items()}


def test_merged_export_equals_peft_merge_and_unload(exported, tmp_path):
  ref, ckpt, adapters, peft_dir, _, _ = exported
  convert.export(ckpt, tmp_path / "merged", adapter=adapters, progress=False)
  convert.export(ckpt, tmp_path / "plain", progress=False)
  merged, plain = _read_all(tmp_path / "merged"), _read_all(tmp_path / "plain")
  reference = peft.PeftModel.from_pretrained(copy.deepcopy(ref.llama), str(peft_dir)).merge_and_unload()
  reference = {k: v.numpy() for k, v in reference.state_dict().items()}
  changed = {k for k in merged if not np.array_equal(merged[k], plain[k])}
  assert changed == {f"model.layers.{n}.{m}.weight" for n in range(2)
                     for m in ("self_attn.q_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.up_proj",
                               "mlp.down_proj")}
  for key in reference:
    np.testing.assert_allclose(merged[key], reference[key], atol=1e-6, err_msg=key)


def test_adapters_that_do_not_fit_are_refused_by_name(exported, tmp_path, capsys):
  ckpt = exported[1]
  other = LoraConfig(rank=2, targets=("q_proj",))
  info = adapter_dir.AdapterInfo(other, True, "", load_pretrained(ckpt).config)
  wrong_rank = {p: np.zeros((2, 8, 3), np.float32) for p in adapter_dir.expected_shapes(info)}
  adapter_dir.save(tmp_path / "bad", wrong_rank, lora=other, scan_layers=True, base="", config=info.config)
  with pytest.raises(ConversionError, match="q_proj/lora_a: shape"):
    convert.export(ckpt, tmp_path / "out", adapter=tmp_path / "bad", progress=False)
  assert not (tmp_path / "out").exists()
  assert convert_cli.run(["export", str(ckpt), str(tmp_path / "out"), "--adapter", str(tmp_path / "none")]) == 1
  assert "not an adapters directory" in capsys.readouterr().err

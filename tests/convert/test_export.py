"""Export to the LLaDA-V Hugging Face layout: exactly upstream's keys and shapes, the source
tensors bit for bit, loadable by the torch modules; import -> export -> import is the identity."""

import json
import re

import jax
import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from transformers import SiglipVisionConfig, SiglipVisionModel

from lladav_jax import load_pretrained
from lladav_jax.convert import __main__ as cli
from lladav_jax.convert import operations as convert
from lladav_jax.convert.problems import ConversionError
from tests import tiny
from tests.convert import checkpoints
from tests.parity.test_lladav_parity import Reference

T, V = tiny.TEXT, tiny.VISION
DEPTH = tiny.LLADAV.vision_feature_depth  # 2 of 3 vision layers, as upstream keeps 26 of 27


def expected_layout() -> dict[str, tuple[int, ...]]:
  """The LLaDA-V key patterns (as published) with the tiny dims, written out independently."""
  d, inter, vocab, vd, vinter = T.hidden_size, T.intermediate_size, T.vocab_size, V.hidden_size, V.intermediate_size
  keys = {"lm_head.weight": (vocab, d), "model.embed_tokens.weight": (vocab, d), "model.norm.weight": (d,),
          "model.image_newline": (d,), "model.mm_projector.0.weight": (d, vd), "model.mm_projector.0.bias": (d,),
          "model.mm_projector.2.weight": (d, d), "model.mm_projector.2.bias": (d,)}
  for n in range(T.num_hidden_layers):
    p = f"model.layers.{n}."
    keys.update({p + "input_layernorm.weight": (d,), p + "post_attention_layernorm.weight": (d,)})
    keys.update({p + f"self_attn.{x}_proj.weight": (d, d) for x in "qkvo"})
    keys.update({p + "mlp.gate_proj.weight": (inter, d), p + "mlp.up_proj.weight": (inter, d),
                 p + "mlp.down_proj.weight": (d, inter)})
  v = checkpoints.VISION_PREFIX
  keys.update({v + "embeddings.patch_embedding.weight": (vd, 3, V.patch_size, V.patch_size),
               v + "embeddings.patch_embedding.bias": (vd,), v + "embeddings.position_embedding.weight": (729, vd),
               v + "post_layernorm.weight": (vd,), v + "post_layernorm.bias": (vd,)})
  for n in range(DEPTH):
    p = f"{v}encoder.layers.{n}."
    keys.update({p + f"layer_norm{i}.{w}": (vd,) for i in (1, 2) for w in ("weight", "bias")})
    keys.update({p + f"self_attn.{x}_proj.weight": (vd, vd) for x in ("q", "k", "v", "out")})
    keys.update({p + f"self_attn.{x}_proj.bias": (vd,) for x in ("q", "k", "v", "out")})
    keys.update({p + "mlp.fc1.weight": (vinter, vd), p + "mlp.fc1.bias": (vinter,),
                 p + "mlp.fc2.weight": (vd, vinter), p + "mlp.fc2.bias": (vd,)})
  return keys


@pytest.fixture(scope="module")
def source(tmp_path_factory):
  ref = Reference()
  state = checkpoints.bf16(checkpoints.lladav_state(ref))
  return state, checkpoints.write_lladav(tmp_path_factory.mktemp("export") / "lladav", state)


def _read_all(directory):
  index = json.loads((directory / "model.safetensors.index.json").read_text())
  tensors = {}
  for name in sorted(set(index["weight_map"].values())):
    with safe_open(directory / name, framework="numpy") as f:
      for key in f.keys():
        assert index["weight_map"][key] == name, key
        tensors[key] = f.get_tensor(key)
  assert index["weight_map"].keys() == tensors.keys()
  assert index["metadata"]["total_size"] == sum(t.nbytes for t in tensors.values())
  return tensors


def test_import_export_import_round_trip(source, tmp_path):
  state, src = source
  assert cli.run(["import", str(src), str(tmp_path / "ckpt"), "--quiet"]) == 0
  assert cli.run(["export", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--quiet", "--max-shard-size", "40KB"]) == 0
  exported = _read_all(tmp_path / "hf")
  assert len(set(json.loads((tmp_path / "hf" / "model.safetensors.index.json").read_text())["weight_map"].values())) > 1
  # Exactly the published key set and shapes, and the source tensors bit for bit.
  assert {k: tuple(v.shape) for k, v in exported.items()} == expected_layout()
  for key, value in exported.items():
    assert value.dtype == state[key].dtype and value.tobytes() == state[key].tobytes(), key
  # config.json reads back to the same model config; tokenizer files came along.
  assert load_pretrained(tmp_path / "ckpt").config == load_pretrained(tmp_path / "hf").config
  assert json.loads((tmp_path / "hf" / "config.json").read_text())["torch_dtype"] == "bfloat16"
  for name, text in checkpoints.TOKENIZER_FILES.items():
    assert (tmp_path / "hf" / name).read_text() == text

  assert cli.run(["import", str(tmp_path / "hf"), str(tmp_path / "again"), "--quiet"]) == 0
  first, again = load_pretrained(tmp_path / "ckpt").params, load_pretrained(tmp_path / "again").params
  flat_first, flat_again = jax.tree_util.tree_leaves_with_path(first), jax.tree_util.tree_leaves_with_path(again)
  assert [p for p, _ in flat_first] == [p for p, _ in flat_again]
  for (path, a), (_, b) in zip(flat_first, flat_again):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), jax.tree_util.keystr(path)


def test_exported_weights_load_into_the_torch_modules(source, tmp_path):
  """An unscanned checkpoint exported in float32 loads strictly into transformers' Llama and a
  SigLIP tower truncated as upstream truncates it, giving back the source values."""
  state, src = source
  assert cli.run(["import", str(src), str(tmp_path / "ckpt"), "--quiet", "--no-scan"]) == 0
  assert cli.run(["export", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--quiet", "--dtype", "float32"]) == 0
  exported = {}
  for file in sorted((tmp_path / "hf").glob("*.safetensors")):
    exported.update(load_file(file))
  llama = tiny.hf_llama(T, seed=9)
  text_prefixes = ("model.layers.", "model.embed_tokens.", "model.norm.", "lm_head.")
  llama.load_state_dict({k: v for k, v in exported.items() if k.startswith(text_prefixes)}, strict=True)
  torch.testing.assert_close(llama.lm_head.weight, torch.from_numpy(state["lm_head.weight"].astype(np.float32)))
  siglip = SiglipVisionModel(SiglipVisionConfig(
      hidden_size=V.hidden_size, intermediate_size=V.intermediate_size, num_hidden_layers=DEPTH,
      num_attention_heads=V.num_attention_heads, image_size=V.image_size, patch_size=V.patch_size,
      vision_use_head=False))
  prefix = checkpoints.VISION_PREFIX
  siglip.load_state_dict({k[len(prefix):]: v for k, v in exported.items() if k.startswith(prefix)}, strict=True)
  key = prefix + "encoder.layers.1.mlp.fc2.weight"
  torch.testing.assert_close(siglip.encoder.layers[1].mlp.fc2.weight, torch.from_numpy(state[key].astype(np.float32)))
  projector = tiny.hf_projector(tiny.PROJECTOR)
  projector.load_state_dict({k[len("model.mm_projector."):]: v for k, v in exported.items()
                             if k.startswith("model.mm_projector.")}, strict=True)


def test_export_refuses_an_unfinished_checkpoint(source, tmp_path, capsys):
  _, src = source
  assert cli.run(["import", str(src), str(tmp_path / "ckpt"), "--quiet"]) == 0
  (tmp_path / "ckpt" / "lladav_checkpoint.json").unlink()  # as if the conversion had died before the end
  assert cli.run(["export", str(tmp_path / "ckpt"), str(tmp_path / "hf")]) == 1
  assert "unfinished conversion" in capsys.readouterr().err
  assert not (tmp_path / "hf").exists()
  with pytest.raises(ValueError, match="unfinished conversion"):
    load_pretrained(tmp_path / "ckpt")


def test_a_checkpoint_that_does_not_fit_its_config_is_refused(source, tmp_path):
  _, src = source
  assert cli.run(["import", str(src), str(tmp_path / "ckpt"), "--quiet"]) == 0
  config_file = tmp_path / "ckpt" / "config.json"
  config_file.write_text(json.dumps(dict(json.loads(config_file.read_text()), intermediate_size=64)))
  culprit = "language_model/layers/mlp/gate_proj/kernel: shape [2, 32, 48] in the checkpoint, the config implies"
  with pytest.raises(ConversionError, match=re.escape(culprit)) as raised:
    load_pretrained(tmp_path / "ckpt")
  assert len(raised.value.problems) == 3  # gate, up and down projections
  with pytest.raises(ConversionError, match=re.escape(culprit)):
    convert.export(tmp_path / "ckpt", tmp_path / "hf", progress=False)
  assert not (tmp_path / "hf").exists()

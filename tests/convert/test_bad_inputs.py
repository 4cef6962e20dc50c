"""Bad checkpoints fail before anything is written, listing every problem by name; a failure while
writing leaves nothing behind either."""

import json

import numpy as np
import pytest
from safetensors.numpy import save_file

from lladav_jax.convert import __main__ as cli
from lladav_jax.convert import operations as convert
from lladav_jax.convert.problems import ConversionError
from lladav_jax.convert.tensor_dir import TensorDir
from tests.convert import checkpoints
from tests.parity.test_lladav_parity import Reference

V = checkpoints.VISION_PREFIX


@pytest.fixture(scope="module")
def state():
  return checkpoints.bf16(checkpoints.lladav_state(Reference()))


def _listing(directory):
  return sorted(p.relative_to(directory) for p in directory.rglob("*"))


def test_every_problem_is_listed_and_nothing_is_written(state, tmp_path, capsys):
  bad = dict(state)
  pos = V + "embeddings.position_embedding.weight"
  bad[pos] = np.concatenate([bad[pos], bad[pos][:1]])  # 730 positions (a class-token table)
  bad["model.extra_head.weight"] = bad["model.norm.weight"]  # a key nothing takes
  up = "model.layers.0.mlp.up_proj.weight"
  bad[up] = np.zeros(bad[up].shape, np.int8)  # a quantised tensor
  q1 = "model.layers.1.self_attn.q_proj.weight"
  bad[q1] = bad[q1].astype(np.float32)  # one layer of a stack in another dtype
  del bad["model.norm.weight"]
  # The post_layernorm tensors go to a third shard, which is then cut short.
  truncated = {k: bad.pop(k) for k in (V + "post_layernorm.weight", V + "post_layernorm.bias")}
  src = checkpoints.write_lladav(tmp_path / "bad", bad, shards=2)
  save_file(truncated, str(src / "model-extra.safetensors"))
  data = (src / "model-extra.safetensors").read_bytes()
  (src / "model-extra.safetensors").write_bytes(data[:-10])
  index = json.loads((src / "model.safetensors.index.json").read_text())
  index["weight_map"].update({k: "model-extra.safetensors" for k in truncated})
  (src / "model.safetensors.index.json").write_text(json.dumps(index))
  before = _listing(tmp_path)

  assert cli.run(["import", str(src), str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  expected = [
      "model-extra.safetensors: unreadable",
      f"{pos}: shape [730, 16]", "a 27x27 patch grid has 729 positions",
      "model.extra_head.weight: unexpected",
      f"{up}: dtype I8",
      "model.layers.{0..1}.mlp.up_proj.weight: the layers mix dtypes ['BF16', 'I8']",
      "model.layers.{0..1}.self_attn.q_proj.weight: the layers mix dtypes ['BF16', 'F32']",
      "model.norm.weight: missing",
  ]
  for text in expected:
    assert text in err, text
  assert "nothing was written" in err
  assert "7 problem(s)" in err  # one line each, and no consequential noise
  assert _listing(tmp_path) == before

  # --dtype resolves the mixed stack; the rest is still reported.
  with pytest.raises(ConversionError) as raised:
    convert.import_lladav(src, tmp_path / "out", dtype="bfloat16", progress=False)
  assert not any("mix dtypes" in p for p in raised.value.problems)
  assert len(raised.value.problems) == 5


def test_failure_while_writing_leaves_no_output(state, tmp_path, monkeypatch):
  src = checkpoints.write_lladav(tmp_path / "src", state)
  before = _listing(tmp_path)
  original = TensorDir.read

  def failing_read(self, key):
    if key == "model.layers.1.mlp.down_proj.weight":
      raise OSError(f"{key}: disk read error")
    return original(self, key)
  monkeypatch.setattr(TensorDir, "read", failing_read)
  with pytest.raises(OSError, match="disk read error"):
    convert.import_lladav(src, tmp_path / "out", progress=False)
  assert _listing(tmp_path) == before  # no output, no staging directory


@pytest.mark.parametrize("override, culprit", [
    ({"mm_projector_type": "mlp2x_res2x_gelu"}, "mm_projector_type 'mlp2x_res2x_gelu' is not supported"),
    ({"mm_patch_merge_type": "maxpool2x2"}, "mm_patch_merge_type 'maxpool2x2' is not supported"),
    ({"rope_scaling": {"type": "linear", "factor": 2.0}}, "'rope_scaling'"),
    ({"model_type": "llava_llama"}, "model_type 'llava_llada'"),
])
def test_unsupported_config_values_are_named(state, tmp_path, override, culprit):
  src = checkpoints.write_lladav(tmp_path / "src", state, **override)
  with pytest.raises(ConversionError, match=culprit) as raised:
    convert.import_lladav(src, tmp_path / "out", progress=False)
  assert str(src / "config.json") in str(raised.value)
  assert not (tmp_path / "out").exists()


def test_unknown_vision_tower_asks_for_its_config(state, tmp_path, capsys):
  src = checkpoints.write_lladav(tmp_path / "src", state, mm_vision_tower="someone/unknown-tower")
  assert cli.run(["import", str(src), "--dry-run"]) == 1
  assert "--vision-config" in capsys.readouterr().err
  tower = checkpoints.write_vision_tower_config(tmp_path / "tower")
  assert cli.run(["import", str(src), "--dry-run", "--vision-config", str(tower / "config.json")]) == 0


def test_existing_output_is_never_overwritten(state, tmp_path, capsys):
  src = checkpoints.write_lladav(tmp_path / "src", state)
  (tmp_path / "out").mkdir()
  (tmp_path / "out" / "keep.txt").write_text("mine")
  assert cli.run(["import", str(src), str(tmp_path / "out"), "--quiet"]) == 1
  assert "already exists" in capsys.readouterr().err
  assert _listing(tmp_path / "out") == [type(tmp_path)("keep.txt")]


def test_a_truncated_safetensors_shard_is_one_problem(state, tmp_path, capsys):
  """Not one problem per tensor the shard held: the file is named once."""
  src = checkpoints.write_lladav(tmp_path / "src", state)
  shard = sorted(src.glob("*.safetensors"))[1]
  shard.write_bytes(shard.read_bytes()[:-100])
  assert cli.run(["import", str(src), str(tmp_path / "out"), "--quiet"]) == 1
  err = capsys.readouterr().err
  assert "1 problem(s)" in err and str(shard) in err and "missing" not in err
  assert not (tmp_path / "out").exists()

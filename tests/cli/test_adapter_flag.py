"""`--adapter DIR` for generate and eval: the adapters are applied over the checkpoint unmerged (the
logits equal those of the merged kernels); adapters that do not fit are one line on stderr."""

import json

import jax
import numpy as np
import pytest
from flax import traverse_util

from lladav_jax import generate as generate_cli
from lladav_jax import load_pretrained
from lladav_jax.convert import adapter_dir
from lladav_jax.convert.peft_export import merge
from lladav_jax.eval import __main__ as eval_cli
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.models.lora import LoraConfig, is_adapter
from lladav_jax.samples import collate, model_inputs
from tests.cli.test_generate import CONFIG, SETTINGS, checkpoint  # noqa: F401 (a fixture)

LORA = LoraConfig(rank=2, alpha=4.0, projector=True)


def write_adapters(path, config, lora=LORA, seed=0):
  info = adapter_dir.AdapterInfo(lora, True, "", config)
  rng = np.random.default_rng(seed)
  leaves = {p: rng.normal(0, 0.3, s).astype(np.float32) for p, s in adapter_dir.expected_shapes(info).items()}
  adapter_dir.save(path, leaves, lora=lora, scan_layers=True, base="", config=config)
  return leaves


def test_generate_applies_the_adapters_unmerged(checkpoint, tmp_path, monkeypatch, capsys):  # noqa: F811
  leaves = write_adapters(tmp_path / "adapters", CONFIG)
  seen = []
  original = generate_cli.generate

  def spy(model, params, samples, settings, **kw):
    seen.append((model, params, samples))
    return original(model, params, samples, settings, **kw)
  monkeypatch.setattr(generate_cli, "generate", spy)
  generate_cli.main(["--checkpoint", str(checkpoint), "--image", str(checkpoint / "picture.png"),
                     "--prompt", "What color is the circle?", *SETTINGS, "--adapter", str(tmp_path / "adapters")])
  assert capsys.readouterr().out.strip()
  ((model, params, samples),) = seen
  assert model.compute.lora == LORA
  flat = traverse_util.flatten_dict(jax.device_get(params["params"]))
  assert all(np.array_equal(flat[p], v) for p, v in leaves.items()), "the adapters as stored, not merged"
  merged = traverse_util.unflatten_dict({p: merge(p, v, leaves, LORA.scaling) for p, v in flat.items()
                                         if not is_adapter(p)})
  inputs = model_inputs(collate([samples], samples[0].input_ids.shape[0], samples[0].num_crops, CONFIG))
  adapted = jax.jit(model.apply)(params, **inputs)
  plain = jax.jit(LLaDAV(CONFIG, ComputeConfig(scan_layers=True)).apply)
  np.testing.assert_allclose(adapted, plain({"params": merged}, **inputs), rtol=1e-5, atol=1e-5)
  base = plain({"params": load_pretrained(checkpoint).params}, **inputs)
  assert np.abs(np.asarray(adapted) - np.asarray(base)).max() > 1e-3, "the adapters must change the logits"


def test_adapters_that_do_not_fit_are_one_line(checkpoint, tmp_path, capsys):  # noqa: F811
  import dataclasses
  other = dataclasses.replace(CONFIG, text=dataclasses.replace(CONFIG.text, intermediate_size=64))
  write_adapters(tmp_path / "wide", other)
  data = tmp_path / "q.jsonl"
  data.write_text(json.dumps({"id": "q0", "image": str(checkpoint / "picture.png"), "question": "Which?",
                              "options": ["red", "blue"], "answer": "A"}) + "\n")
  question = ["--checkpoint", str(checkpoint), "--prompt", "hi", *SETTINGS]
  for adapter, message in ((tmp_path / "missing", f"error: --adapter {tmp_path / 'missing'}: not an adapters "
                                                  "directory (no adapter.json)\n"),
                           (tmp_path / "wide", f"error: --adapter {tmp_path / 'wide'}: does not fit the checkpoint's "
                                               "model: ")):
    with pytest.raises(SystemExit) as exit_info:
      generate_cli.main([*question, "--adapter", str(adapter)])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and err.startswith(message) and err.count("\n") == 1, err
    with pytest.raises(SystemExit) as exit_info:
      eval_cli.main(["--checkpoint", str(checkpoint), "--task", "jsonl", "--data", str(data),
                     "--output", str(tmp_path / "out"), "--adapter", str(adapter)])
    eval_err = capsys.readouterr().err
    assert exit_info.value.code != 0 and eval_err.startswith(message) and eval_err.count("\n") == 1, eval_err
    assert not (tmp_path / "out").exists()
  assert "mlp/down_proj/lora_a: shape (2, 64, 2), the model needs (2, 48, 2)" in err, err

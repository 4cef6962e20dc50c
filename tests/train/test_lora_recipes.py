"""configs/lora.py and configs/qlora.py, shrunk to a tiny model: fine-tuning a Hugging Face LLaDA-V
directory on LLaVA-format records lowers the loss, writes WORKDIR/adapters that `load_adapters`
reads back, and QLoRA's loss stays within a stated margin of LoRA's from the same base and masks."""

import functools
import json
import pathlib

import numpy as np
import pytest

from lladav_jax import run_config
from lladav_jax.convert import adapter_dir
from lladav_jax.train import loop
from tests.convert import checkpoints
from tests.parity.test_lladav_parity import Reference
from tests.train.test_init_from import run_config_like_tiny_lladav

ROOT = pathlib.Path(__file__).resolve().parents[2]
STEPS = 40
LR = 1e-2
# Relative difference of the mean loss over the last half of the run, QLoRA against LoRA. Measured
# here (blocks of 16 inputs): int8 0.01%, nf4 0.02%; untrained, the nf4 base alone is
# 0.5% off the float base. The margins leave room for other CPUs' rounding and still fail a base that
# is quantised wrongly.
MARGINS = {"int8": 0.01, "nf4": 0.02}


@functools.lru_cache(maxsize=None)
def files(root: str):
  """A random tiny LLaDA-V in upstream's Hugging Face layout (the parity tests' towers, whose LM head
  can make confident predictions), a tokenizer and LLaVA-format records."""
  root = pathlib.Path(root)
  base = checkpoints.write_lladav(root / "base", checkpoints.lladav_state(Reference()), torch_dtype="float32")
  (root / "tokenizer").mkdir()
  for name, text in checkpoints.TOKENIZER_FILES.items():
    (root / "tokenizer" / name).write_text(text)
  rng = np.random.default_rng(0)
  records = []
  for i in range(8):  # one of two answers, told apart by the question's first word: quick to learn
    words = rng.integers(10, 40, 6)
    answer = range(50, 58) if words[0] % 2 else range(60, 68)
    records.append({"id": f"r{i}", "conversations": [
        {"from": "human", "value": " ".join(f"w{w}" for w in words)},
        {"from": "gpt", "value": " ".join(f"w{w}" for w in answer)}]})
  (root / "data.json").write_text(json.dumps(records))
  return base, root / "tokenizer", root / "data.json"


def recipe(name: str, tmp_path, lr: float, **lora):
  base, tokenizer, data = files(str(tmp_path.parent / "lora-recipe-files"))
  config = run_config.load_config_file(str(ROOT / "configs" / f"{name}.py"))
  tiny_config = run_config_like_tiny_lladav()
  config.model = tiny_config.model
  config.compute.update(dict(dtype="float32", param_dtype="float32", remat_policy="none", attention_impl="xla",
                             loss_chunk=0))
  config.mesh.update(dict(data=-1, fsdp=1, tensor=1))
  config.train.update(dict(global_batch_size=8, num_steps=STEPS, tokenizer_dir=str(tokenizer)))
  config.optim.update(dict(lr=lr, vision_lr=lr, warmup_ratio=0.0))
  config.lora.update(dict(rank=4, alpha=8.0, quantization_block=min(config.lora.quantization_block, 16), **lora))
  config.data.update(dict(sources=[dict(path=str(data))], seq_len_buckets=(64,), crop_buckets=(0,), max_length=64,
                          num_workers=0, prefetch_batches=0, index_dir=str(tmp_path / "index")))
  config.checkpoint.update(dict(every_steps=100, init_from=str(base), async_save=False))
  return config


def losses(logged):
  return np.array([logged[s]["loss"] for s in sorted(logged)])


@functools.lru_cache(maxsize=None)
def run(name: str, root: str, lr: float = LR, **lora):
  """(config, loss per step, workdir). Every run of a recipe draws the same masks at the same steps,
  so losses of two runs compare step by step."""
  tmp_path = pathlib.Path(root) / f"{name}-{lr}-{'-'.join(map(str, lora.values())) or 'default'}"
  tmp_path.mkdir(parents=True)
  config = recipe(name, tmp_path, lr, **lora)
  return config, losses(loop.train(config, str(tmp_path / "run"))), tmp_path / "run"


@pytest.fixture(scope="module")
def root(tmp_path_factory):
  return str(tmp_path_factory.mktemp("recipes"))


@pytest.mark.parametrize("name", ["lora", "qlora"])
def test_recipe_lowers_the_loss_and_writes_the_adapters(name, root):
  config, loss, workdir = run(name, root)
  _, frozen, _ = run("lora", root, lr=0.0)  # the float base alone, on the same batches and masks
  assert np.isfinite(loss).all()
  half = STEPS // 2
  # One step's loss varies with its masks far more than training changes it in a few steps: compare
  # with the untrained run step by step.
  print(f"{name}: last {half} steps' mean loss {loss[half:].mean():.4f}, untrained {frozen[half:].mean():.4f}")
  assert loss[half:].mean() < 0.9 * frozen[half:].mean(), (loss, frozen)
  info = adapter_dir.read_info(workdir / "adapters")
  assert info.lora == run_config.lora_config(config) and info.base == config.checkpoint.init_from
  assert info.lora.base_quantization == ("nf4" if name == "qlora" else "none")
  stored = adapter_dir.read_all(workdir / "adapters")
  assert set(stored) == set(adapter_dir.expected_shapes(info))
  # B has moved away from zero (the projector's stays: these records have no images).
  assert all(v.any() == (p[0] == "language_model") for p, v in stored.items() if p[-1] == "lora_b")


@pytest.mark.parametrize("kind", [pytest.param("int8", marks=pytest.mark.slow), "nf4"])
def test_qlora_loss_is_within_its_margin_of_lora(kind, root):
  _, lora_loss, _ = run("lora", root)
  _, qlora_loss, _ = run("qlora", root) if kind == "nf4" else run("qlora", root, base_quantization=kind)
  half = STEPS // 2
  relative = abs(qlora_loss[half:].mean() - lora_loss[half:].mean()) / lora_loss[half:].mean()
  print(f"{kind}: LoRA {lora_loss[half:].mean():.4f}, QLoRA {qlora_loss[half:].mean():.4f}, relative {relative:.4f}")
  assert relative < MARGINS[kind]
  assert not np.array_equal(qlora_loss, lora_loss), "the quantised base must be what QLoRA trains on"

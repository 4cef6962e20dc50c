"""The fine-tuning recipe of docs/training.md end to end: a checkpoint in upstream's Hugging Face layout,
converted (or read directly), fine-tuned on a small LLaVA JSON with images, the whole model or with the
vision tower frozen.

That the model learned is judged independently of the training loss: the test masks every supervised
token of the data's batches itself and compares the model's cross-entropy there (the objective at t = 1)
before and after.
"""

import dataclasses
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import traverse_util

from configs import finetune
from lladav_jax import cli, data, run_config
from lladav_jax.checkpoints.pretrained import load_pretrained
from lladav_jax.convert import operations
from lladav_jax.models import ComputeConfig, LLaDAV
from lladav_jax.samples import model_inputs
from lladav_jax.tokens import IGNORE_LABEL
from lladav_jax.train import loop
from lladav_jax.train.metrics import read_metrics
from tests.train import recipe
from tests.train.subprocesses import ROOT, env

LEARNING = {"train.num_steps": 30, "optim.lr": 2e-2}


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
  """(checkpoint directory, data file, image folder)."""
  root = tmp_path_factory.mktemp("finetune")
  data_file, images = recipe.write_llava_data(root / "mine")
  return recipe.write_upstream_checkpoint(root / "LLaDA-V"), data_file, images


def params_of(path) -> dict:
  return traverse_util.flatten_dict(jax.device_get(load_pretrained(path, dtype="float32").params))


def loss_with_every_target_masked(path, data_file, images) -> float:
  """Mean cross-entropy at the supervised tokens of 4 batches of the data, all of them [MASK]ed."""
  config = recipe.apply(finetune.get_config(), {**recipe.TINY_MODEL, **recipe.TINY_RUN})
  config.data.sources[0].update(dict(path=str(data_file), image_folder=str(images)))
  model_config = run_config.model_config(config)
  data_config = dataclasses.replace(data.data_config(config.data), batch_size=2, shuffle=False)
  tokenizer = cli.find_tokenizer(str(path))
  params = load_pretrained(path, dtype="float32").params
  model = LLaDAV(model_config, ComputeConfig(dtype="float32", param_dtype="float32", scan_layers=True))
  iterator = data.make_data_iterator(data_config, model_config, tokenizer, shard_index=0, shard_count=1)
  total, count = 0.0, 0
  for _ in range(4):
    batch = next(iterator)
    supervised = batch["labels"] != IGNORE_LABEL
    inputs = model_inputs(dict(batch, input_ids=np.where(supervised, model_config.tokens.mask, batch["input_ids"])))
    log_probs = jax.nn.log_softmax(np.asarray(model.apply({"params": params}, **inputs), np.float64), axis=-1)
    chosen = np.take_along_axis(np.asarray(log_probs), np.where(supervised, batch["labels"], 0)[..., None], -1)
    total -= float(chosen[..., 0][supervised].sum())
    count += int(supervised.sum())
  iterator.close()
  return total / count


def check_learned(workdir, start, data_file, images):
  before = loss_with_every_target_masked(start, data_file, images)
  after = loss_with_every_target_masked(workdir, data_file, images)
  assert after < 0.8 * before, (before, after)
  assert sorted(read_metrics(str(workdir / "metrics.jsonl"))) == list(range(1, LEARNING["train.num_steps"] + 1))


def test_frozen_vision_recipe_on_a_converted_checkpoint(upstream, tmp_path):
  checkpoint, data_file, images = upstream
  converted = operations.import_lladav(checkpoint, tmp_path / "lladav-8b", progress=False).out
  workdir = tmp_path / "run"
  command = recipe.finetune_command("configs/finetune_frozen_vision.py", workdir, converted, data_file, images,
                                    **LEARNING)
  command[command.index(f"--config.train.tokenizer_dir={converted}")] = \
      f"--config.train.tokenizer_dir={converted / 'tokenizer'}"
  result = subprocess.run([sys.executable, "-m", "lladav_jax.train", *command], cwd=ROOT, env=env(1),
                          capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-5000:]
  assert f"params from {converted}" in result.stderr
  start, end = params_of(converted), params_of(workdir)
  assert start.keys() == end.keys()
  frozen = [k for k in start if k[0] == "vision_tower"]
  assert frozen and all(np.array_equal(start[k], end[k]) for k in frozen), "the vision tower stays bit-identical"
  assert all(not np.array_equal(start[k], end[k]) for k in start if k[0] != "vision_tower")
  check_learned(workdir, converted, data_file, images)


@pytest.mark.slow  # a second training run of the same size
def test_full_model_recipe_on_the_hugging_face_directory(upstream, tmp_path):
  checkpoint, data_file, images = upstream
  config = recipe.apply(finetune.get_config(), {**recipe.TINY_MODEL, **recipe.TINY_RUN, **LEARNING})
  config.checkpoint.init_from = config.train.tokenizer_dir = str(checkpoint)
  config.data.sources[0].update(dict(path=str(data_file), image_folder=str(images)))
  workdir = tmp_path / "run"
  loop.train(config, str(workdir))
  start, end = params_of(checkpoint), params_of(workdir)
  unused = ("vision_tower", "post_layernorm")  # built (the checkpoint holds it) but never feeds the projector
  moved = {k[0] for k in start if not np.array_equal(start[k], end[k])}
  assert moved == {"vision_tower", "mm_projector", "language_model", "image_newline"}, "every tower is trained"
  assert all(not np.array_equal(start[k], end[k]) for k in start if k[:2] != unused)
  check_learned(workdir, checkpoint, data_file, images)

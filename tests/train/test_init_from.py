"""Starting params: a converted checkpoint or Hugging Face directory (via load_pretrained), or an
earlier stage's workdir (params only)."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import traverse_util

from configs import tiny as tiny_run_config
from lladav_jax import run_config
from lladav_jax.checkpoints import fitting
from lladav_jax.convert import key_map
from lladav_jax.train import loop, preflight
from tests import tiny
from tests.convert import checkpoints


def run_config_like_tiny_lladav():
  """configs/tiny.py with the towers of tests/tiny.LLADAV (the converter tests' checkpoint layout)."""
  config = tiny_run_config.get_config()
  config.model.text.update({k: getattr(tiny.TEXT, k) for k in (
      "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
      "num_key_value_heads")})
  config.model.vision.update({k: getattr(tiny.VISION, k) for k in (
      "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")})
  config.model.tokens.update(dict(bos=90, eos=91, start_header=92, end_header=93, eot=94, mask=95))
  config.train.synthetic.update(dict(seq_len=32, max_crops=0, image_fraction=0.0))
  config.checkpoint.update(dict(every_steps=1, keep=1))
  return config


def flat(params):
  return traverse_util.flatten_dict(jax.device_get(params))


def test_params_from_a_hugging_face_checkpoint(tmp_path):
  config = run_config_like_tiny_lladav()
  plan = loop.setup(config, total_steps=4)
  want = jax.device_get(plan.init().params)
  entries = key_map.lladav_entries(plan.model.config, scan=True)
  checkpoints.write_lladav(tmp_path / "hf", dict(key_map.params_to_hf(want, entries)), torch_dtype="float32")
  got = loop.load_init_params(str(tmp_path / "hf"), plan)
  got_flat, want_flat = flat(got), flat(want)
  assert got_flat.keys() == want_flat.keys()
  for k in want_flat:
    np.testing.assert_array_equal(got_flat[k], want_flat[k], err_msg="/".join(k))
    assert got_flat[k].dtype == want_flat[k].dtype
  head = got["language_model"]["lm_head"]["kernel"]
  assert head.sharding == plan.state_shardings.params["language_model"]["lm_head"]["kernel"]

  other = run_config_like_tiny_lladav()
  other.model.text.intermediate_size = 64
  with pytest.raises(fitting.CheckpointMismatch, match="model.text.intermediate_size: 48 in the checkpoint, 64"):
    loop.load_init_params(str(tmp_path / "hf"), loop.setup(other, total_steps=4))


def upstream_checkpoint(directory, config, **config_json):
  """A LLaDA-V checkpoint as upstream's save_pretrained writes it (bf16, upstream's config.json keys)."""
  plan = loop.setup(config, total_steps=4)
  params = jax.device_get(plan.init().params)
  entries = key_map.lladav_entries(plan.model.config, scan=True)
  state = {key: np.array(value) for key, value in key_map.params_to_hf(params, entries)}
  return checkpoints.write_lladav(directory, checkpoints.bf16(state), **config_json)


def test_an_upstream_checkpoint_fits_when_every_dimension_matches(tmp_path):
  # Upstream's config.json says bos_token_id 128000 (the model never reads it: it uses the tokenizer's ids).
  config = run_config_like_tiny_lladav()
  path = upstream_checkpoint(tmp_path / "upstream", config, bos_token_id=128000, max_position_embeddings=8192)
  run = run_config.model_config(config)
  assert run.text.bos_token_id == 126080
  fitted = preflight.fitted_model_config(config_starting_from(init_from=str(path)), run, str(tmp_path / "run"))
  # Only what describes the checkpoint is taken from it; everything the model computes with is the run's.
  assert (fitted.text.bos_token_id, fitted.text.max_position_embeddings) == (128000, 8192)
  assert dataclasses.replace(fitted, text=dataclasses.replace(fitted.text, bos_token_id=126080,
                                                              max_position_embeddings=run.text.max_position_embeddings),
                             vision_tower_name=run.vision_tower_name) == run
  plan = loop.setup(config, total_steps=4, model_config=fitted)
  loaded = flat(loop.load_init_params(str(path), plan))
  stored = checkpoints.bf16({k: np.array(v, np.float32) for k, v in flat(plan.init().params).items()})
  for key, value in stored.items():
    np.testing.assert_array_equal(np.asarray(loaded[key], np.float32), np.asarray(value, np.float32))


def test_a_checkpoint_that_does_not_fit_names_each_field(tmp_path):
  config = run_config_like_tiny_lladav()
  path = upstream_checkpoint(tmp_path / "upstream", config, bos_token_id=128000)
  config.model.text.update(dict(intermediate_size=64, rope_theta=10000.0))
  config.model.vision.layer_norm_eps = 1e-5
  config.model.tokens.mask = 89
  # What the run decides for itself (how images become tokens, the length limit) is no mismatch.
  config.model.update(dict(image_aspect_ratio="pad", max_length=2048))
  with pytest.raises(fitting.CheckpointMismatch) as caught:
    preflight.fitted_model_config(config_starting_from(init_from=str(path)), run_config.model_config(config),
                                  str(tmp_path / "run"))
  message = str(caught.value)
  assert caught.value.fields == [
      "model.text.intermediate_size: 48 in the checkpoint, 64 in the run config",
      "model.text.rope_theta: 500000.0 in the checkpoint, 10000.0 in the run config",
      "model.vision.layer_norm_eps: 1e-06 in the checkpoint, 1e-05 in the run config",
      "model.tokens.mask: 95 in the checkpoint, 89 in the run config"]
  assert "\n" not in message and "LLaDAConfig(" not in message and str(path) in message


def test_a_missing_checkpoint_is_named(tmp_path):
  with pytest.raises(preflight.RunConfigError,
                     match=f"config.checkpoint.init_from = '{tmp_path}/nothing': .*no such directory"):
    preflight.fitted_model_config(config_starting_from(init_from=str(tmp_path / "nothing")),
                                  run_config.model_config(run_config_like_tiny_lladav()), str(tmp_path / "run"))


def test_a_directory_that_is_no_checkpoint_is_named(tmp_path):
  (tmp_path / "empty").mkdir()
  with pytest.raises(preflight.RunConfigError, match=f"config.checkpoint.init_from = '{tmp_path}/empty': .*neither"):
    preflight.fitted_model_config(config_starting_from(init_from=str(tmp_path / "empty")),
                                  run_config.model_config(run_config_like_tiny_lladav()), str(tmp_path / "run"))


def config_starting_from(init_from: str):
  config = run_config_like_tiny_lladav()
  config.checkpoint.init_from = init_from
  return config


@pytest.mark.slow  # a training run of its own
def test_params_from_an_earlier_stage(tmp_path):
  config = run_config_like_tiny_lladav()
  config.train.num_steps = 1
  config.optim.warmup_ratio = 0.0  # so that the one step moves the params
  loop.train(config, str(tmp_path / "stage1"))
  plan = loop.setup(config, total_steps=4)
  params, fresh = flat(loop.load_init_params(str(tmp_path / "stage1"), plan)), flat(plan.init().params)
  assert params.keys() == fresh.keys()
  moved = [k for k in fresh if not np.array_equal(params[k], fresh[k])]
  assert ("language_model", "lm_head", "kernel") in moved, "the stage's trained params, not a fresh init"

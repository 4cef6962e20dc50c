"""Starting params: a converted checkpoint or Hugging Face directory (via load_pretrained), or an
earlier stage's workdir (params only)."""

import jax
import numpy as np
import pytest
from flax import traverse_util

from configs import tiny as tiny_run_config
from lladav_jax.convert import key_map
from lladav_jax.train import loop
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
  with pytest.raises(ValueError, match="text config"):
    loop.load_init_params(str(tmp_path / "hf"), loop.setup(other, total_steps=4))


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

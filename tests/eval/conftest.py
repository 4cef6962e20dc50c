"""One tiny LLaDA-V checkpoint (Hugging Face layout, demo tokenizer) for all evaluation tests."""

import pytest

from lladav_jax import load_pretrained
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lladav import LLaDAV
from tests.eval import common


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
  return common.make_checkpoint(tmp_path_factory.mktemp("eval_ckpt"))


@pytest.fixture(scope="session")
def setup(checkpoint):
  """(model, variables, tokenizer) loaded from the checkpoint the way the CLI loads them."""
  config, params = load_pretrained(checkpoint)
  return LLaDAV(config, ComputeConfig(scan_layers=True)), {"params": params}, Tokenizer.from_dir(checkpoint)


@pytest.fixture(scope="session")
def sharp_checkpoint(tmp_path_factory):
  return common.make_checkpoint(tmp_path_factory.mktemp("eval_sharp_ckpt"), sharp=True)


@pytest.fixture(scope="session")
def sharp_setup(sharp_checkpoint):
  """(model, variables, tokenizer) of the checkpoint whose answers depend on the prompt."""
  config, params = load_pretrained(sharp_checkpoint)
  return LLaDAV(config, ComputeConfig(scan_layers=True)), {"params": params}, Tokenizer.from_dir(sharp_checkpoint)

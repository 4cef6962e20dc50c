"""The LLaDA tower against transformers' Llama run with a full (non-causal) attention mask."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from lladav_jax.convert import key_map
from lladav_jax.model_config import LLaDAConfig
from lladav_jax.models.llada import LLaDAModel, default_positions
from lladav_jax.models.masks import make_attention_mask
from tests import tiny

# float32 on CPU; measured differences are ~1e-6 on logits of magnitude ~2.
ATOL = 1e-5


def _ours(config: LLaDAConfig, hf_model, compute):
  state = tiny.state_dict_numpy(hf_model)
  params = key_map.params_from_hf(state.__getitem__,
                                  key_map.llada_entries(config, scan=compute.scan_layers))
  return LLaDAModel(config, compute), {"params": params}


def _logits(model, params, ids, segment_ids=None):
  b, length = ids.shape

  def run(params, ids):
    mask = None if segment_ids is None else make_attention_mask(jnp.asarray(segment_ids))
    embeds = model.apply(params, ids, method=LLaDAModel.embed)
    return model.apply(params, embeds, default_positions(b, length), mask)
  return np.asarray(jax.jit(run)(params, jnp.asarray(ids)))


@pytest.mark.parametrize("compute", [tiny.F32, tiny.F32_LOOP], ids=["scan", "loop"])
@pytest.mark.parametrize("kv_heads", [4, 2], ids=["mha", "gqa"])
def test_logits_match_llama_with_full_mask(compute, kv_heads):
  config = dataclasses.replace(tiny.TEXT, num_key_value_heads=kv_heads)
  hf = tiny.hf_llama(config)
  model, params = _ours(config, hf, compute)
  ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(2, 11))
  with torch.no_grad():
    full = torch.ones(2, 1, 11, 11, dtype=torch.bool)
    expected = hf(input_ids=torch.from_numpy(ids), attention_mask=full).logits.numpy()
    causal = hf(input_ids=torch.from_numpy(ids)).logits.numpy()
  got = _logits(model, params, ids)
  np.testing.assert_allclose(got, expected, atol=ATOL, rtol=1e-4)
  # The reference really is bidirectional: the causal run differs from it.
  assert np.abs(causal - expected).max() > 100 * ATOL


def test_padding_mask_matches_llama_with_the_same_mask():
  config = tiny.TEXT
  hf = tiny.hf_llama(config)
  model, params = _ours(config, hf, tiny.F32)
  ids = np.random.default_rng(1).integers(0, config.vocab_size, size=(2, 9))
  segment_ids = np.ones((2, 9), np.int32)
  segment_ids[1, 6:] = 0  # the second row has 3 padding tokens
  visible = torch.from_numpy(segment_ids[:, None, None, :] != 0).expand(2, 1, 9, 9)
  with torch.no_grad():
    expected = hf(input_ids=torch.from_numpy(ids), attention_mask=visible).logits.numpy()
  got = _logits(model, params, ids, segment_ids)
  real = segment_ids != 0
  np.testing.assert_allclose(got[real], expected[real], atol=ATOL, rtol=1e-4)

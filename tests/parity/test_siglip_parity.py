"""The SigLIP vision tower against transformers' SiglipVisionModel."""

import jax
import numpy as np
import pytest
import torch

from lladav_jax.convert import key_map
from lladav_jax.models.siglip import SiglipVisionTower
from tests import tiny

ATOL = 1e-5


def _ours(hf_model, compute, num_layers=None):
  config = tiny.VISION
  layers = config.num_hidden_layers if num_layers is None else num_layers
  # transformers 5 saves SiglipVisionModel without the "vision_model." prefix.
  params = key_map.params_from_hf(
      tiny.state_dict_numpy(hf_model).__getitem__,
      key_map.siglip_entries(config, num_layers=layers, scan=compute.scan_layers, hf_prefix=""))
  model = SiglipVisionTower(config, compute, num_layers=num_layers, collect_hidden_states=True)
  return model, {"params": params}


def _pixels(n=2, seed=0):
  return np.random.default_rng(seed).uniform(-1, 1, size=(n, 384, 384, 3)).astype(np.float32)


@pytest.mark.parametrize("compute", [tiny.F32, tiny.F32_LOOP], ids=["scan", "loop"])
def test_every_hidden_state_and_post_layernorm_match(compute):
  hf = tiny.hf_siglip(tiny.VISION)
  model, params = _ours(hf, compute)
  pixels = _pixels()
  with torch.no_grad():
    ref = hf(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2), output_hidden_states=True)
  out = jax.jit(model.apply)(params, pixels)
  assert out["hidden_states"].shape[0] == len(ref.hidden_states) == tiny.VISION.num_hidden_layers + 1
  for i, expected in enumerate(ref.hidden_states):
    np.testing.assert_allclose(out["hidden_states"][i], expected.numpy(), atol=ATOL, rtol=1e-5,
                               err_msg=f"hidden state {i}")
  np.testing.assert_allclose(out["post_layernorm"], ref.last_hidden_state.numpy(), atol=ATOL, rtol=1e-5)


def test_truncated_tower_gives_the_penultimate_hidden_state_unnormalised():
  """LLaDA-V's feature: upstream deletes the last layer and skips post_layernorm."""
  hf = tiny.hf_siglip(tiny.VISION)
  depth = tiny.LLADAV.vision_feature_depth
  assert depth == tiny.VISION.num_hidden_layers - 1
  model, params = _ours(hf, tiny.F32, num_layers=depth)
  pixels = _pixels(1, seed=3)
  with torch.no_grad():
    ref = hf(pixel_values=torch.from_numpy(pixels).permute(0, 3, 1, 2), output_hidden_states=True)
  out = jax.jit(model.apply)(params, pixels)
  np.testing.assert_allclose(out["last_hidden_state"], ref.hidden_states[-2].numpy(), atol=ATOL, rtol=1e-5)
  assert np.abs(ref.hidden_states[-2].numpy() - ref.last_hidden_state.numpy()).max() > 1e-2


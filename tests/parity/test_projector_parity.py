"""The projector against upstream's mlp2x_gelu (torch nn.Sequential)."""

import numpy as np
import torch

from lladav_jax.convert import key_map
from lladav_jax.models.projector import Projector
from tests import tiny


def test_projector_matches_upstream_sequential():
  hf = tiny.hf_projector(tiny.PROJECTOR)
  params = key_map.params_from_hf(tiny.state_dict_numpy(hf).__getitem__,
                                  key_map.projector_entries(tiny.PROJECTOR, hf_prefix="", flax_prefix=()))
  x = np.random.default_rng(0).normal(size=(2, 5, tiny.PROJECTOR.in_features)).astype(np.float32)
  with torch.no_grad():
    expected = hf(torch.from_numpy(x)).numpy()
  got = Projector(tiny.PROJECTOR, tiny.F32).apply({"params": params}, x)
  np.testing.assert_allclose(got, expected, atol=1e-5, rtol=1e-5)

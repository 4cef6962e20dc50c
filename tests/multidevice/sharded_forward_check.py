"""Run with 8 host devices: the sharded forward equals the single-device plain ("xla") one, and
params shard. The sharded run uses the attention implementation given (default "xla").

Used by test_sharded_forward.py in a subprocess (XLA_FLAGS must be set before jax starts).
"""

import dataclasses
import sys

import flax.linen as nn
import jax
import numpy as np
import optax

from lladav_jax import sharding
from lladav_jax.images.crops import sample_visuals
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import build_sample, collate, model_inputs
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID as IMG
from lladav_jax.train.state import sharded_init
from tests import tiny


def main(data: int, fsdp: int, tensor: int, attention_impl: str = "xla") -> None:
  jax.config.update("jax_default_matmul_precision", "highest")
  assert jax.device_count() == 8, jax.devices()
  config, compute = tiny.LLADAV, tiny.F32
  rules = sharding.DEFAULT_LOGICAL_AXIS_RULES
  mesh = sharding.create_mesh({"data": data, "fsdp": fsdp, "tensor": tensor})
  samples = [
      build_sample([1, IMG, 2, 3], sample_visuals([tiny.random_image(640, 360)], config), config),
      build_sample([4, 5, IMG], sample_visuals([tiny.random_image(384, 384)], config), config),
      build_sample([6, 7, 8], [], config),
      build_sample([IMG, 9], sample_visuals([tiny.random_image(200, 600)], config), config),
  ] * 2  # 8 rows, so that every mesh here can split the batch
  seq_len, max_crops = 2064, 4
  batch = model_inputs(collate([[s] for s in samples], seq_len, max_crops, config))
  model = LLaDAV(config, dataclasses.replace(compute, attention_impl=attention_impl))
  plain = LLaDAV(config, compute)

  # Params initialised straight into their shardings, as training does.
  _, _, _, state_shardings, init = sharded_init(model, lambda params: (optax.set_to_zero(), None), mesh, rules, seed=0)
  params, param_shardings = {"params": init().params}, {"params": state_shardings.params}
  batch_shardings = {k: sharding.batch_sharding(mesh, v.ndim, rules) for k, v in batch.items()}
  sharded_batch = jax.device_put(batch, batch_shardings)
  def forward(module, params, batch):
    return module.apply(params, **batch)

  with jax.set_mesh(mesh), nn.logical_axis_rules(sharding.normalize_rules(rules)):
    logits = jax.jit(lambda p, b: forward(model, p, b), in_shardings=(param_shardings, batch_shardings))(
        params, sharded_batch)
  assert not logits.sharding.is_fully_replicated, logits.sharding

  # The same computation on one device, from the same parameter values.
  host_params = jax.device_get(params)
  one_device = jax.devices()[0]
  reference = jax.jit(lambda p, b: forward(plain, p, b))(jax.device_put(host_params, one_device),
                                                          jax.device_put(batch, one_device))
  np.testing.assert_allclose(np.asarray(logits), np.asarray(reference), atol=1e-5, rtol=1e-5)

  # Large parameters are split across devices, not replicated.
  p = params["params"]
  expected = 1.0 / (fsdp * tensor)
  for name, leaf in [("embed_tokens", p["language_model"]["embed_tokens"]["embedding"]),
                     ("lm_head", p["language_model"]["lm_head"]["kernel"]),
                     ("q_proj", p["language_model"]["layers"]["self_attn"]["q_proj"]["kernel"]),
                     ("down_proj", p["language_model"]["layers"]["mlp"]["down_proj"]["kernel"]),
                     ("vision fc1", p["vision_tower"]["encoder"]["layers"]["mlp"]["fc1"]["kernel"]),
                     ("projector", p["mm_projector"]["linear_1"]["kernel"])]:
    fraction = sharding.sharded_fraction(leaf)
    assert abs(fraction - expected) < 1e-9, (name, fraction, leaf.sharding)
  print("sharded forward OK", dict(data=data, fsdp=fsdp, tensor=tensor), attention_impl)


if __name__ == "__main__":
  main(*map(int, sys.argv[1:4]), *sys.argv[4:5])

"""Run with 8 host devices: a QLoRA step (NF4 base, adapters on the language tower and projector) on
a (2, 2, 2) mesh equals the one-device step; adapters, codes and scales are sharded by their axes.

Used by test_sharded_lora.py in a subprocess (XLA_FLAGS must be set before jax starts).
"""

import jax
import numpy as np
from flax import traverse_util

from lladav_jax import multihost, sharding
from lladav_jax.train import adapters, loop
from lladav_jax.train.state import with_params
from lladav_jax.train.step import step_inputs
from tests.train.sharded_step_check import config_for
from tests.train.test_step import batches_for


def lora_config(mesh):
  config = config_for(mesh)
  config.lora.update(dict(enabled=True, rank=4, alpha=8.0, projector=True, base_quantization="nf4",
                          quantization_block=16))
  return config


def run(plan, config, base, hosts, global_rows=None):
  params = adapters.attach(jax.device_put(base), plan.abstract_state.params, plan.state_shardings.params,
                           plan.model.compute.lora, config.seed)
  state = with_params(plan.state_shardings, params, plan.tx, config.seed)
  losses = []
  for host in hosts:
    batch = host if global_rows is None else multihost.global_batch(host, plan.batch_shardings, global_rows)
    state, metrics = plan.train_step(state, batch)
    losses.append(float(metrics["loss"]))
  return state, losses


def main():
  jax.config.update("jax_default_matmul_precision", "highest")
  assert jax.device_count() == 8, jax.devices()
  config = lora_config((1, 1, 1))
  batches = batches_for(config)
  hosts = [step_inputs(next(batches), dialogue_causal=False) for _ in range(2)]
  base = jax.device_get(loop.setup(config_for((1, 1, 1)), 10, devices=jax.devices()[:1]).init().params)

  one = loop.setup(config, 10, devices=jax.devices()[:1])
  reference, reference_losses = run(one, config, base, hosts)
  sharded_config = lora_config((2, 2, 2))
  plan = loop.setup(sharded_config, 10)
  state, losses = run(plan, sharded_config, base, hosts, global_rows=16)
  np.testing.assert_allclose(losses, reference_losses, rtol=1e-5)

  flat = traverse_util.flatten_dict(state.params)
  q_proj = ("language_model", "layers", "self_attn", "q_proj")
  for leaf, fraction in (("kernel", 1 / 4), ("kernel_scale", 1 / 2), ("lora_a", 1 / 2), ("lora_b", 1 / 2)):
    array = flat[q_proj + (leaf,)]
    assert abs(sharding.sharded_fraction(array) - fraction) < 1e-9, (leaf, array.sharding)
  assert flat[q_proj + ("kernel",)].dtype == np.uint8
  want = traverse_util.flatten_dict(jax.device_get(reference.params))
  got = traverse_util.flatten_dict(jax.device_get(state.params))
  for k in want:
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-4, err_msg="/".join(k))
  print("sharded lora step OK")


if __name__ == "__main__":
  main()

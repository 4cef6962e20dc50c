"""Run with 8 host devices: the sharded train step equals the one-device step on every mesh.

Used by test_sharded_step.py in a subprocess (XLA_FLAGS must be set before jax starts).
"""

import sys

import jax
import numpy as np
from flax import traverse_util

from lladav_jax import multihost, run_config, sharding
from lladav_jax.train import loop
from lladav_jax.train.host_batches import ShardedBatches, SyntheticSource
from lladav_jax.train.state import with_params
from lladav_jax.train.step import step_inputs
from tests.train import common

MESHES = [(8, 1, 1), (2, 4, 1), (2, 2, 2)]


def config_for(mesh):
  config = common.run_config(micro_batches=2, global_batch_size=16)  # 8 rows per micro-batch
  config.optim.update(dict(lr=1e-3, vision_lr=1e-3, warmup_ratio=0.0))
  config.mesh.update(dict(zip(sharding.MESH_AXES, mesh)))
  return config


def compare_states(state, reference, what):
  got, want = traverse_util.flatten_dict(state.params), traverse_util.flatten_dict(reference.params)
  for k in want:
    # Reductions are split across devices: float32 rounding. Adam divides each entry's first moment
    # by its own RMS, so where two steps' gradients nearly cancel rounding is amplified; 1e-4 is a
    # tenth of a step (lr = 1e-3), while a missing or doubled update would be off by a whole step.
    np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-4, err_msg=f"{what}: {'/'.join(k)}")
  # The gradients themselves (Adam's first moment) agree to float32 rounding of the largest entry.
  got_mu, want_mu = jax.tree.leaves(state.opt_state), jax.tree.leaves(reference.opt_state)
  scale = max(float(np.abs(x).max()) for x in want_mu if np.ndim(x) > 0)
  for a, b in zip(got_mu, want_mu):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{what}: optimiser state")


def main():
  jax.config.update("jax_default_matmul_precision", "highest")
  assert jax.device_count() == 8, jax.devices()
  config = config_for((1, 1, 1))
  source = SyntheticSource(run_config.model_config(config), num_examples=64, seed=1, image_fraction=0.5)
  batches = ShardedBatches(source, global_batch=16, rows=(0, 16), seq_len=config.train.synthetic.seq_len,
                           max_crops=config.train.synthetic.max_crops)
  hosts = [step_inputs(next(batches), dialogue_causal=False) for _ in range(2)]

  one = loop.setup(config, 10, devices=jax.devices()[:1])
  state = one.init()
  init_params = jax.device_get(state.params)
  reference_losses = []
  for host in hosts:
    state, metrics = one.train_step(state, host)
    reference_losses.append(float(metrics["loss"]))
  reference = jax.device_get(state)

  for mesh in MESHES:
    plan = loop.setup(config_for(mesh), 10)
    if mesh == MESHES[-1]:  # the sharded init itself: the same random params as on one device
      state = plan.init()
      for a, b in zip(jax.tree.leaves(jax.device_get(state.params)), jax.tree.leaves(init_params)):
        np.testing.assert_array_equal(a, b)
    else:
      state = with_params(plan.state_shardings, jax.device_put(init_params), plan.tx, config.seed)
    fsdp, tensor = mesh[1], mesh[2]
    lm_head = state.params["language_model"]["lm_head"]["kernel"]
    assert abs(sharding.sharded_fraction(lm_head) - 1 / (fsdp * tensor)) < 1e-9, lm_head.sharding
    mu = [x for x in jax.tree.leaves(state.opt_state) if x.shape == lm_head.shape]
    assert mu and all(x.sharding == lm_head.sharding for x in mu), "Adam moments follow the params"
    losses = []
    for host in hosts:
      batch = multihost.global_batch(host, plan.batch_shardings, 16)
      state, metrics = plan.train_step(state, batch)
      losses.append(float(metrics["loss"]))
    np.testing.assert_allclose(losses, reference_losses, rtol=1e-5, err_msg=str(mesh))
    compare_states(jax.device_get(state), reference, str(mesh))
    print("mesh", mesh, "losses", losses)
  print("sharded step OK")


if __name__ == "__main__":
  main(*sys.argv[1:])

"""The MFU line's FLOP count is the model's, whichever attention or loss implementation runs."""

import jax

from lladav_jax import run_config
from lladav_jax.models.compute import ATTENTION_IMPLS
from lladav_jax.train import loop, metrics
from tests.train import common


def test_every_implementation_reports_the_same_flops_per_step():
  counts = set()
  for impl in set(ATTENTION_IMPLS) - {"cudnn"}:  # cudnn needs a GPU even to trace the model
    for loss_chunk in (0, 16):
      config = common.run_config()
      config.compute.update(dict(attention_impl=impl, loss_chunk=loss_chunk))
      counts.add(loop.setup(config, 10, devices=jax.devices()[:1]).flops_per_step(64, 2))
  config = common.run_config()
  # Forward + backward of all three trained towers: three times the forward matmuls.
  forward = metrics.tower_forward_flops(run_config.model_config(config), config.train.global_batch_size, 64, 2)
  assert counts == {3 * sum(forward.values())}

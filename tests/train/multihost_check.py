"""One process of a training run on a (data 2, fsdp 4) mesh: `python -m tests.train.multihost_check
WORKDIR NUM_PROCESSES PROCESS_ID PORT`. With one process (8 local devices) jax.distributed is not
started; with two (4 local devices each) they meet at localhost:PORT.

Used by test_multihost.py.
"""

import sys

import jax

from lladav_jax import cli
from lladav_jax.train import loop
from tests.train import common


def config():
  c = common.run_config(global_batch_size=8, num_steps=3)
  c.mesh.update(dict(data=2, fsdp=4, tensor=1))
  # Text only: the vision path's sharding is covered by test_sharded_step; this is about processes.
  c.train.synthetic.update(dict(max_crops=0, image_fraction=0.0))
  c.checkpoint.update(dict(every_steps=3, keep=1))  # one save (each save compiles per-array copies)
  return c


def main(workdir: str, num_processes: str, process_id: str, port: str):
  if int(num_processes) > 1:
    cli.start_distributed(f"localhost:{port}", int(num_processes), int(process_id))
  jax.config.update("jax_default_matmul_precision", "highest")
  assert jax.device_count() == 8, jax.devices()
  loop.train(config(), workdir)
  print(f"process {jax.process_index()} of {jax.process_count()} done")


if __name__ == "__main__":
  main(*sys.argv[1:])

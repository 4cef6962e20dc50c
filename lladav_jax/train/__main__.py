"""python -m lladav_jax.train --config configs/stage2_si.py [--config.train.micro_batches=4 ...] --workdir DIR

Running the same command again resumes from the latest complete checkpoint in DIR. Multi-process:
run it on every host with --coordinator_address/--num_processes/--process_id (or the JAX_* variables),
or --distributed to let JAX detect the cluster.
"""

import logging
import os

# Multi-device CPU runs: XLA's concurrency-optimised CPU scheduler may order independent collectives
# differently on different devices, and the step then deadlocks; keep program order (CPU-only flag).
_CPU_SCHEDULER_FLAG = "--xla_cpu_enable_concurrency_optimized_scheduler=false"
if "xla_cpu_enable_concurrency_optimized_scheduler" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + _CPU_SCHEDULER_FLAG).strip()

from absl import app, flags  # noqa: E402
from absl import logging as absl_logging  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", None, "run config file (configs/*.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events, metrics and the loss plot")
_COORDINATOR = flags.DEFINE_string("coordinator_address", "", "host:port of process 0 (multi-process runs)")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", 0, "number of processes (multi-process runs)")
_PROCESS_ID = flags.DEFINE_integer("process_id", -1, "this process's index (multi-process runs)")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "start jax.distributed with cluster auto-detection")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("lladav_jax").setLevel(logging.INFO)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  from lladav_jax.train import loop, multihost  # after flags: jax.distributed must start first
  multihost.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, auto=_DISTRIBUTED.value)
  loop.train(_CONFIG.value, _WORKDIR.value)


def cli():
  """The `lladav-train` console script."""
  app.run(main)


if __name__ == "__main__":
  cli()

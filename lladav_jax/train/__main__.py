"""python -m lladav_jax.train --config configs/stage2_si.py [--config.train.micro_batches=4 ...] --workdir DIR

Running the same command again resumes from the latest complete checkpoint in DIR. Multi-process:
run it on every host with --coordinator-address/--num-processes/--process-id (or the JAX_* variables),
or --distributed to let JAX detect the cluster.
"""

import logging
import sys

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags

from lladav_jax import cli, run_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "run config file (configs/*.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events, metrics and the loss plot")
_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, bool: flags.DEFINE_bool}
_DISTRIBUTED = {name: _DEFINE[kind](name, default, help_text)
                for name, kind, default, help_text in cli.DISTRIBUTED_FLAGS}
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("lladav_jax").setLevel(logging.INFO)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  cli.set_platform_flags()
  value = {name: holder.value for name, holder in _DISTRIBUTED.items()}
  cli.start_distributed(value["coordinator-address"], value["num-processes"], value["process-id"],
                        auto=value["distributed"])
  from lladav_jax.train import loop  # after jax.distributed: the loop touches the devices
  loop.train(_CONFIG.value, _WORKDIR.value)


def config_path(argv: list[str]) -> str | None:
  """The --config file named on the command line."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def entry_point():
  """The `lladav-train` console script. Config files import their siblings (`from configs import
  base`), so the directory holding their package goes on the import path, wherever this runs."""
  path = config_path(sys.argv)
  root = None if path is None else run_config.config_package_root(path)
  if root is not None and root not in sys.path:
    sys.path.insert(0, root)
  # absl's --help lists the main module's flags; for a console script that is the wrapper script.
  for name in ("config", "workdir", *_DISTRIBUTED):
    flags.FLAGS.register_key_flag_for_module(sys.argv[0], flags.FLAGS[name])
  app.run(main)


if __name__ == "__main__":
  entry_point()

"""python -m lladav_jax.train --config configs/stage2_si.py [--config.train.micro_batches=4 ...] --workdir DIR

Running the same command again resumes from the latest complete checkpoint in DIR. Multi-process:
run it on every host with --coordinator-address/--num-processes/--process-id (or the JAX_* variables),
or --distributed to let JAX detect the cluster.

Mistakes get one line on stderr naming the flag, config field or file, and a non-zero exit: 2 for the
command line and config file (before anything runs), 1 for a run that cannot start or go on (settings,
data, checkpoint to start from). Any other error keeps its traceback.
"""

import logging
import os
import re
import sys
import traceback

from absl import app, flags
from absl import logging as absl_logging
from ml_collections import config_flags
from ml_collections.config_flags import config_path as override_path

from lladav_jax import cli, run_config

_CONFIG = config_flags.DEFINE_config_file("config", None, "run config file (configs/*.py)", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "checkpoints, TensorBoard events, metrics and the loss plot")
_DEFINE = {str: flags.DEFINE_string, int: flags.DEFINE_integer, bool: flags.DEFINE_bool}
_DISTRIBUTED = {name: _DEFINE[kind](name, default, help_text)
                for name, kind, default, help_text in cli.DISTRIBUTED_FLAGS}
flags.mark_flags_as_required(["config", "workdir"])
USAGE_EXIT, RUN_EXIT = 2, 1


def main(argv):
  del argv
  logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
  logging.getLogger("lladav_jax").setLevel(logging.INFO)
  absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file it writes at INFO
  cli.set_platform_flags()
  value = {name: holder.value for name, holder in _DISTRIBUTED.items()}
  cli.start_distributed(value["coordinator-address"], value["num-processes"], value["process-id"],
                        auto=value["distributed"])
  sys.exit(run(_CONFIG.value, _WORKDIR.value))


def run(config, workdir: str) -> int:
  """Trains; the failures a person can act on become one line on stderr and RUN_EXIT."""
  # Imported after jax.distributed has started: the loop touches the devices.
  from lladav_jax.checkpoints.fitting import CheckpointMismatch
  from lladav_jax.convert.problems import ConversionError
  from lladav_jax.data import DataError, SourceError, TokenizerError
  from lladav_jax.train import loop, preflight
  expected = (preflight.RunConfigError, CheckpointMismatch, ConversionError, SourceError, DataError, TokenizerError,
              loop.TrainingDiverged)
  try:
    loop.train(config, workdir)
  except expected as e:
    print(f"error: {preflight.one_line(e)}", file=sys.stderr)
    return RUN_EXIT
  return 0


def config_path(argv: list[str]) -> str | None:
  """The --config file named on the command line."""
  for i, arg in enumerate(argv):
    if arg.startswith("--config="):
      return arg.split("=", 1)[1]
    if arg == "--config" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def overridden_fields(argv: list[str]) -> list[str]:
  """The config fields that `--config.<field>=...` (or `--[no]config.<field>` for booleans) set."""
  fields = []
  for arg in argv:
    for prefix in ("--config.", "--noconfig."):
      if arg.startswith(prefix):
        fields.append(arg[len(prefix):].split("=", 1)[0])
  return fields


def config_file_problem(path: str, argv: list[str]) -> str | None:
  """Why the config file cannot be loaded (with the line of the file that failed) or an override names
  no field of it, or None."""
  try:
    config = run_config.load_config_file(path)
  except FileNotFoundError:
    return f"--config {path}: no such file"
  except Exception as e:  # anything a config file's code raises is a mistake in that file
    lines = [frame.lineno for frame in traceback.extract_tb(e.__traceback__)
             if os.path.abspath(frame.filename) == os.path.abspath(path)]
    where = f" (line {lines[-1]})" if lines and not isinstance(e, SyntaxError) else ""
    return f"--config {path}: {type(e).__name__}: {_plain(e)}{where}"
  for field in overridden_fields(argv):
    try:
      override_path.get_value(field, config)
    except (KeyError, AttributeError, IndexError, TypeError) as e:
      hint = re.search(r'Did you mean "([^"]+)"', str(e))
      return f"--config.{field}: {path} has no such field" + (f' (did you mean "{hint[1]}"?)' if hint else "")
  return None


def _plain(error: BaseException) -> str:
  """ConfigDict's KeyError / AttributeError messages are reprs of messages: unquoted, on one line."""
  text = str(error).replace("\\n", "\n").strip("'\"")
  return "; ".join(line.strip("'\"") for line in text.splitlines() if line.strip())


def parse_flags(argv: list[str]) -> list[str]:
  """absl's flag parsing, with the config file and its overrides checked first: a mistake in either
  is one line on stderr and exit status USAGE_EXIT."""
  path = config_path(argv)
  problem = config_file_problem(path, argv) if path is not None else None
  if problem is None:
    try:
      return flags.FLAGS(argv)
    except flags.Error as e:
      problem = str(e).splitlines()[0]
  print(f"error: {problem}", file=sys.stderr)
  sys.exit(USAGE_EXIT)


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
  app.run(main, flags_parser=parse_flags)


if __name__ == "__main__":
  entry_point()

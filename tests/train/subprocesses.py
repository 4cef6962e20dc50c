"""Running test programs in fresh processes (device count and jax.distributed are fixed at start)."""

import os
import pathlib
import subprocess
import sys

from lladav_jax.cli import XLA_CPU_FLAGS

ROOT = pathlib.Path(__file__).parents[2]
# Test programs are small and compile-bound: a lower LLVM optimisation level halves compile time
# without changing results (no fast-math). XLA_CPU_FLAGS: the command lines' scheduler setting.
XLA_TEST_FLAGS = f"--xla_backend_optimization_level=0 {XLA_CPU_FLAGS}"


def env(devices: int = 1, **extra) -> dict:
  flags = f"--xla_force_host_platform_device_count={devices} {XLA_TEST_FLAGS}"
  return dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT), **extra)


def run_module(module: str, *args: str, devices: int = 1, timeout: int = 600) -> str:
  """Runs `python -m module args` to completion; returns stdout, fails the test on a bad exit."""
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=env(devices),
                          capture_output=True, text=True, timeout=timeout)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
  return result.stdout

"""An 8-device CPU mesh gives the single-device logits, with parameters really sharded."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[2]


@pytest.mark.parametrize("mesh", [(2, 2, 2), (1, 8, 1), (2, 1, 4)], ids=["d2f2t2", "f8", "d2t4"])
def test_sharded_forward_matches_one_device(mesh):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT))
  result = subprocess.run([sys.executable, "-m", "tests.multidevice.sharded_forward_check", *map(str, mesh)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "sharded forward OK" in result.stdout

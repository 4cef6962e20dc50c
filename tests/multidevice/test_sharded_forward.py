"""An 8-device CPU mesh gives the single-device plain logits, with parameters really sharded, for the plain
path and the attention kernels."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[2]


@pytest.mark.parametrize("mesh,attention_impl", [((2, 2, 2), "xla"), ((1, 8, 1), "xla"), ((2, 1, 4), "xla"),
                                                 ((2, 2, 2), "splash"), ((1, 8, 1), "blockwise")],
                         ids=["d2f2t2", "f8", "d2t4", "d2f2t2_splash", "f8_blockwise"])
def test_sharded_forward_matches_one_device(mesh, attention_impl):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT))
  result = subprocess.run([sys.executable, "-m", "tests.multidevice.sharded_forward_check", *map(str, mesh),
                           attention_impl],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "sharded forward OK" in result.stdout

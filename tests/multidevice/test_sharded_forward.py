"""An 8-device CPU mesh gives the single-device plain logits, with parameters really sharded, for the plain
path and the attention kernels."""

import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).parents[2]


# The default run keeps one mesh per implementation; the other meshes are slow.
@pytest.mark.parametrize("mesh,attention_impl", [
    pytest.param((2, 2, 2), "xla", id="d2f2t2"),
    pytest.param((1, 8, 1), "xla", id="f8", marks=pytest.mark.slow),
    pytest.param((2, 1, 4), "xla", id="d2t4", marks=pytest.mark.slow),
    pytest.param((2, 2, 2), "splash", id="d2f2t2_splash"),
    pytest.param((1, 8, 1), "blockwise", id="f8_blockwise")])
def test_sharded_forward_matches_one_device(mesh, attention_impl):
  env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT))
  result = subprocess.run([sys.executable, "-m", "tests.multidevice.sharded_forward_check", *map(str, mesh),
                           attention_impl],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
  assert "sharded forward OK" in result.stdout

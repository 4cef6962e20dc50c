"""On 8 CPU devices, meshes (8,1,1), (2,4,1), (2,2,2) give the one-device losses and update."""

from tests.train.subprocesses import run_module


def test_sharded_step_matches_one_device():
  out = run_module("tests.train.sharded_step_check", devices=8)
  assert "sharded step OK" in out

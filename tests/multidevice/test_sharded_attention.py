"""On an 8-device CPU mesh the sharded attention kernels give the one-device plain path's results."""

from tests.train.subprocesses import run_module


def test_sharded_splash_and_blockwise_match_one_device():
  assert "sharded attention OK" in run_module("tests.multidevice.sharded_attention_check", devices=8)

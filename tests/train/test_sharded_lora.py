"""On 8 CPU devices, a QLoRA step on a (2, 2, 2) mesh gives the one-device losses and update."""

import pytest

from tests.train.subprocesses import run_module


@pytest.mark.slow  # two plans compiled in a subprocess of 8 devices
def test_sharded_qlora_step_matches_one_device():
  out = run_module("tests.train.sharded_lora_check", devices=8)
  assert "sharded lora step OK" in out

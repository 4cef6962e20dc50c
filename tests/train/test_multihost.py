"""2 processes x 4 CPU devices (jax.distributed on localhost) train exactly like 1 process x 8."""

import json
import socket
import subprocess
import sys

import numpy as np
import pytest

from lladav_jax.train.metrics import read_metrics
from tests.train.subprocesses import ROOT, env, run_module


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_match_one(tmp_path):
  single, multi = tmp_path / "single", tmp_path / "multi"
  run_module("tests.train.multihost_check", str(single), "1", "0", "0", devices=8)

  port = str(free_port())
  procs = [subprocess.Popen([sys.executable, "-m", "tests.train.multihost_check", str(multi), "2", str(i), port],
                            cwd=ROOT, env=env(4), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i}:\n{out[-5000:]}"
    assert f"process {i} of 2 done" in out

  want, got = read_metrics(single / "metrics.jsonl"), read_metrics(multi / "metrics.jsonl")
  assert sorted(got) == sorted(want) == [1, 2, 3]
  # Collectives run over gloo between processes instead of in one process: float32 rounding only.
  np.testing.assert_allclose([got[s]["loss"] for s in (1, 2, 3)], [want[s]["loss"] for s in (1, 2, 3)],
                             rtol=1e-5)
  # Every process saved its own data-iterator state with each checkpoint.
  for step in (3,):
    data = multi / "checkpoints" / str(step) / "data"
    states = [json.loads((data / f"process_{i}-of-2.json").read_text()) for i in range(2)]
    assert states == [{"next_batch": step}] * 2

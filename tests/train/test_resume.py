"""Killing the CLI mid-run (kill -9, or SIGTERM) and rerunning the same command gives exactly the
losses of an uninterrupted run."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from lladav_jax.train.metrics import read_metrics
from tests.train.subprocesses import ROOT, env

STEPS = 8
OVERRIDES = ["--config.model.vision.image_size=28", "--config.train.synthetic.seq_len=64",
             "--config.train.synthetic.max_crops=2",
             f"--config.train.num_steps={STEPS}", "--config.checkpoint.every_steps=2",
             "--config.checkpoint.keep=2"]


def command(workdir):
  return [sys.executable, "-m", "lladav_jax.train", "--config", "configs/tiny.py", "--workdir", str(workdir),
          *OVERRIDES]


def run_to_completion(workdir) -> str:
  result = subprocess.run(command(workdir), cwd=ROOT, env=env(1), capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-5000:]
  return result.stderr


def run_until_step(workdir, step: int, sig: int) -> subprocess.Popen:
  """Starts a run and sends `sig` once `step` has been logged."""
  proc = subprocess.Popen(command(workdir), cwd=ROOT, env=env(1), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  deadline = time.time() + 600
  while max(read_metrics(os.path.join(workdir, "metrics.jsonl")), default=0) < step:
    assert proc.poll() is None, f"the run ended early:\n{proc.stderr.read()[-5000:]}"
    assert time.time() < deadline, "the run made no progress"
    time.sleep(0.05)
  os.kill(proc.pid, sig)
  proc.wait(timeout=600)
  return proc


def losses(workdir):
  path = os.path.join(workdir, "metrics.jsonl")
  with open(path) as f:
    assert [json.loads(line)["step"] for line in f] == list(range(1, STEPS + 1)), "each step once, in order"
  metrics = read_metrics(path)
  return [metrics[s]["loss"] for s in range(1, STEPS + 1)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference")
  run_to_completion(workdir)
  return losses(workdir)


@pytest.mark.slow
def test_kill_9_then_rerun_gives_identical_losses(tmp_path, reference):
  proc = run_until_step(tmp_path, 5, signal.SIGKILL)
  assert proc.returncode == -signal.SIGKILL
  log = run_to_completion(tmp_path)
  assert "resuming from step" in log, log[-3000:]
  # Same compiled program, same restored bits, same masks from fold_in(rng, step): exact equality.
  assert losses(tmp_path) == reference


@pytest.mark.slow
def test_sigterm_saves_the_current_step_and_rerun_finishes_identically(tmp_path, reference):
  proc = run_until_step(tmp_path, 3, signal.SIGTERM)
  assert proc.returncode == 0, proc.stderr.read()[-5000:]
  stopped = max(int(p) for p in os.listdir(tmp_path / "checkpoints") if p.isdigit())
  assert stopped >= 3 and stopped < STEPS
  log = run_to_completion(tmp_path)
  assert f"resuming from step {stopped}" in log
  assert losses(tmp_path) == reference

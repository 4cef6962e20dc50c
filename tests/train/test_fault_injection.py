"""kill -9 of the fine-tuning recipe's trainer (two data workers, asynchronous checkpoints every step) at
three points, then the same command again:

  - during data loading: the workers are up, no step has been taken;
  - mid-step: step 3 is logged, the next one is running;
  - during a checkpoint save: orbax's temporary step directory exists.

Each time: the trainer's workers and resource tracker end, no temporary file or step directory is left
once the command has run again, no incomplete step is ever taken for a checkpoint, and the rerun gives
exactly the losses and final params of an uninterrupted run.
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import psutil
import pytest
from flax import traverse_util

from lladav_jax.checkpoints.pretrained import load_pretrained
from lladav_jax.checkpoints.workdir import CHECKPOINT_DIR, latest_step
from tests.train import recipe
from tests.train.subprocesses import ROOT, env

pytestmark = pytest.mark.slow  # seven training runs

STEPS = 8
RUN = {"train.num_steps": STEPS, "checkpoint.every_steps": 1, "checkpoint.async_save": True, "checkpoint.keep": 2,
       "data.num_workers": 2, "data.prefetch_batches": 2}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("faults")
  data_file, images = recipe.write_llava_data(root / "mine")
  return recipe.write_upstream_checkpoint(root / "LLaDA-V"), data_file, images


def command(inputs, workdir):
  checkpoint, data_file, images = inputs
  return [sys.executable, "-m", "lladav_jax.train",
          *recipe.finetune_command("configs/finetune.py", workdir, checkpoint, data_file, images, **RUN)]


def run_to_completion(inputs, workdir) -> str:
  result = subprocess.run(command(inputs, workdir), cwd=ROOT, env=env(1), capture_output=True, text=True, timeout=900)
  assert result.returncode == 0, result.stderr[-5000:]
  return result.stderr


def losses(workdir) -> list[float]:
  with open(workdir / "metrics.jsonl") as f:
    records = [json.loads(line) for line in f]
  assert [r["step"] for r in records] == list(range(1, STEPS + 1))
  return [r["loss"] for r in records]


def final_params(workdir) -> dict:
  return traverse_util.flatten_dict(jax.device_get(load_pretrained(workdir).params))


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
  workdir = tmp_path_factory.mktemp("reference") / "run"
  run_to_completion(inputs, workdir)
  return losses(workdir), final_params(workdir)


def workers_up(trainer: psutil.Process, workdir) -> bool:
  spawned = [p for p in trainer.children() if "spawn_main" in " ".join(p.cmdline())]
  return len(spawned) >= 2 and not (workdir / "metrics.jsonl").exists()


def step_logged(step: int):
  def reached(trainer, workdir):
    path = workdir / "metrics.jsonl"
    return path.exists() and sum(1 for line in path.read_text().splitlines() if line.endswith("}")) >= step
  return reached


def saving(trainer, workdir) -> bool:
  directory = workdir / CHECKPOINT_DIR
  return directory.is_dir() and any("tmp" in name for name in os.listdir(directory))


POINTS = {"during data loading": workers_up, "mid-step": step_logged(3), "during a checkpoint save": saving}


def kill_at(inputs, workdir, reached) -> list[psutil.Process]:
  """Starts the trainer, SIGKILLs it once `reached(trainer, workdir)`; returns its descendants then."""
  proc = subprocess.Popen(command(inputs, workdir), cwd=ROOT, env=env(1), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  trainer = psutil.Process(proc.pid)
  deadline = time.monotonic() + 900
  try:
    while True:
      try:
        if reached(trainer, workdir):
          break
      except (psutil.Error, OSError):  # a child or file went away while looking
        pass
      assert proc.poll() is None, f"the run ended before the point:\n{proc.stderr.read()[-5000:]}"
      assert time.monotonic() < deadline, "the point was never reached"
      time.sleep(0.005)
    descendants = trainer.children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
  finally:
    proc.kill()
    proc.wait()
  return descendants


def gone(processes, seconds: float = 30) -> list[psutil.Process]:
  deadline = time.monotonic() + seconds
  while True:
    left = [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    if not left or time.monotonic() > deadline:
      return left
    time.sleep(0.1)


def leftovers(workdir) -> list[str]:
  """Temporary names anywhere in the workdir (ours: `.name.tmp-*`; orbax's: `*.orbax-checkpoint-tmp*`)."""
  return [os.path.join(d, n) for d, dirs, files in os.walk(workdir) for n in dirs + files if "tmp" in n]


@pytest.mark.parametrize("point", sorted(POINTS))
def test_kill_9_then_rerun(point, inputs, reference, tmp_path):
  workdir = tmp_path / "run"
  descendants = kill_at(inputs, workdir, POINTS[point])
  assert len(descendants) >= 3, "two data workers and the resource tracker were running"
  assert gone(descendants) == [], "no orphaned worker or resource tracker"
  saved = latest_step(str(workdir))
  if saved is not None:  # whatever counts as saved is complete: its params load
    assert os.path.isfile(workdir / CHECKPOINT_DIR / str(saved) / "commit_success.txt")
    load_pretrained(workdir)

  log = run_to_completion(inputs, workdir)
  assert (f"resuming from step {saved}" in log) if saved else ("params from" in log), log[-3000:]
  assert leftovers(workdir) == []
  want_losses, want_params = reference
  assert losses(workdir) == want_losses
  got = final_params(workdir)
  assert got.keys() == want_params.keys()
  for key in want_params:
    np.testing.assert_array_equal(got[key], want_params[key], err_msg="/".join(key))

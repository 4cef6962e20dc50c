"""SIGKILL at several points of a conversion and of an evaluation: nothing is left running, no partial
output stands where a finished one would, and the next run ends with exactly what an uninterrupted
run writes.

Kill points (each is the first moment the file system shows the stage):
  convert import  a) the staging directory exists   b) parameter files are being written (each leaf's
                  write is slowed down here so that this stage lasts long enough to be caught)
  eval            a) run.json written, nothing decoded   b) some answers logged, not all
"""

import json
import os
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lladav_jax.checkpoints.pretrained import load_pretrained
from lladav_jax.convert import checkpoint_dir
from tests.convert import checkpoints
from tests.eval import common
from tests.parity.test_lladav_parity import Reference
from tests.train.subprocesses import ROOT, env

pytestmark = pytest.mark.slow  # a fresh process per kill; run with `make test-all`


# The convert command line with every parameter leaf's write taking 20 ms longer.
SLOW_CONVERT = ("import sys, time; from lladav_jax.convert import report; advance = report.Progress.advance; "
                "report.Progress.advance = lambda self, *a: (time.sleep(0.02), advance(self, *a))[1]; "
                "from lladav_jax.convert import __main__ as cli; sys.exit(cli.run(sys.argv[1:]))")


def start(*command: str) -> subprocess.Popen:
  # Its own process group: whatever it starts can be found after it is killed.
  return subprocess.Popen([sys.executable, *command], cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, start_new_session=True)


def _env():
  return env(1, JAX_DEFAULT_MATMUL_PRECISION="highest")  # the test process's precision (tests/conftest.py)


def kill_when(proc: subprocess.Popen, reached, timeout: float = 300) -> None:
  deadline = time.time() + timeout
  while time.time() < deadline:
    if reached():
      os.killpg(proc.pid, signal.SIGKILL)
      break
    assert proc.poll() is None, "finished before the kill point: " + proc.stderr.read().decode()[-2000:]
    time.sleep(0.005)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL
  time.sleep(0.2)
  with pytest.raises(ProcessLookupError):  # nothing of the killed run is left running
    os.killpg(proc.pid, 0)


def run_to_end(module: str, *args: str) -> str:
  result = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout + result.stderr


def partials(out):
  return sorted(out.parent.glob(f".{out.name}{checkpoint_dir.PARTIAL_INFIX}*"))


@pytest.fixture(scope="module")
def hf_checkpoint(tmp_path_factory):
  root = tmp_path_factory.mktemp("convert")
  return checkpoints.write_lladav(root / "src", checkpoints.bf16(checkpoints.lladav_state(Reference())))


@pytest.fixture(scope="module")
def reference_import(hf_checkpoint, tmp_path_factory):
  out = tmp_path_factory.mktemp("reference") / "ckpt"
  run_to_end("lladav_jax.convert", "import", str(hf_checkpoint), str(out), "--quiet")
  return load_pretrained(out).params


STAGES = {
    "staging": lambda out: bool(partials(out)),
    "params": lambda out: any("params" in str(f) and f.is_file() for s in partials(out) for f in s.rglob("*")),
}


@pytest.mark.parametrize("stage", STAGES)
def test_a_killed_import_leaves_nothing_and_the_next_one_cleans_up(stage, hf_checkpoint, reference_import,
                                                                   tmp_path):
  out = tmp_path / "ckpt"
  proc = start("-c", SLOW_CONVERT, "import", str(hf_checkpoint), str(out), "--quiet")
  kill_when(proc, lambda: STAGES[stage](out))
  assert not out.exists()  # never a partial checkpoint under the final name
  left = partials(out)
  err = run_to_end("lladav_jax.convert", "import", str(hf_checkpoint), str(out), "--quiet")
  assert all(f"removed {p}, left by an interrupted run" in err for p in left) and not partials(out)
  jax.tree_util.tree_map(np.testing.assert_array_equal, load_pretrained(out).params, reference_import)


@pytest.fixture(scope="module")
def eval_inputs(tmp_path_factory):
  root = tmp_path_factory.mktemp("eval")
  checkpoint = common.make_checkpoint(root / "ckpt")
  (root / "a.png").write_bytes(common.png_bytes(24, 16))
  data = root / "q.jsonl"
  data.write_text("".join(json.dumps({"id": f"q{i}", "image": "a.png", "question": f"What? {i}",
                                      "options": ["red", "green"], "answer": "A"}) + "\n" for i in range(12)))
  args = ["--checkpoint", str(checkpoint), "--task", "jsonl", "--data", str(data), "--batch-size", "2",
          "--no-progress"]
  full = root / "full"
  run_to_end("lladav_jax.eval", *args, "--output", str(full))
  return args, full


def lines(path):
  return len(path.read_bytes().splitlines()) if path.exists() else 0


EVAL_STAGES = {
    "run_json": lambda out: (out / "run.json").exists(),
    "some_answers": lambda out: lines(out / "predictions.jsonl") >= 3,
}


@pytest.mark.parametrize("stage", EVAL_STAGES)
def test_a_killed_eval_resumes_to_the_same_files(stage, eval_inputs, tmp_path):
  args, full = eval_inputs
  out = tmp_path / "out"
  proc = start("-m", "lladav_jax.eval", *args, "--output", str(out))
  kill_when(proc, lambda: EVAL_STAGES[stage](out))
  assert not (out / "results.jsonl").exists() and not (out / "summary.json").exists()
  assert not [p for p in out.iterdir() if ".tmp-" in p.name]
  done = lines(out / "predictions.jsonl")
  output = run_to_end("lladav_jax.eval", *args, "--output", str(out))
  assert done == 0 or "of 12 samples done" in output  # (a torn last line is not counted)
  assert (out / "results.jsonl").read_bytes() == (full / "results.jsonl").read_bytes()
  summary, reference = (json.loads((d / "summary.json").read_text()) for d in (out, full))
  assert summary["metrics"] == reference["metrics"] and summary["failed"] == reference["failed"]

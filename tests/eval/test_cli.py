"""`python -m lladav_jax.eval` end to end: a run killed with SIGKILL resumes to the same results file,
and two processes (jax.distributed) give the same results as one."""

import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from lladav_jax.eval import __main__ as cli
from tests.eval import common
from tests.train.subprocesses import ROOT, env


@pytest.fixture(scope="module")
def files(tmp_path_factory, checkpoint):
  root = tmp_path_factory.mktemp("cli")
  sizes = [(24, 16), (16, 24), (30, 30)]
  for i, size in enumerate(sizes):
    (root / f"{i}.png").write_bytes(common.png_bytes(*size, seed=i))
  lines = [{"id": f"q{i}", "image": f"{i % 3}.png", "question": f"What is in the image? {i}",
            "options": ["red", "green", "blue"], "answer": "B", "category": f"c{i % 2}"} for i in range(24)]
  data = root / "questions.jsonl"
  data.write_text("".join(json.dumps(x) + "\n" for x in lines))
  return checkpoint, data


def args(checkpoint, data, out, *extra):
  return ["--checkpoint", str(checkpoint), "--task", "jsonl", "--data", str(data), "--output", str(out),
          "--batch-size", "2", "--no-progress", *extra]


def subprocess_env(devices):
  # The same matmul precision as the test process (tests/conftest.py), so answers can be compared.
  return env(devices, JAX_DEFAULT_MATMUL_PRECISION="highest")


def test_cli_resumes_after_sigkill(files, tmp_path, capsys):
  checkpoint, data = files
  summary = cli.main(args(checkpoint, data, tmp_path / "full"))
  assert summary["num_scored"] == 24 and summary["throughput"]["decoded_this_run"] == 24
  assert (tmp_path / "full" / "summary.md").read_text().startswith("# jsonl")

  out = tmp_path / "killed"
  proc = subprocess.Popen([sys.executable, "-m", "lladav_jax.eval", *args(checkpoint, data, out)], cwd=ROOT,
                          env=subprocess_env(1), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
  log = out / "predictions.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if log.exists() and len(log.read_bytes().splitlines()) >= 4:
      proc.send_signal(signal.SIGKILL)
      break
    time.sleep(0.02)
  proc.wait(timeout=60)
  assert proc.returncode == -signal.SIGKILL, proc.stderr.read().decode()[-3000:]
  assert not (out / "results.jsonl").exists()
  done_before = len(log.read_bytes().splitlines())
  assert done_before < 24

  capsys.readouterr()
  resumed = cli.main(args(checkpoint, data, out))
  assert resumed["throughput"]["decoded_this_run"] == 24 - done_before
  assert f"resuming {out}: {done_before} of 24 samples done" in capsys.readouterr().out
  assert (out / "results.jsonl").read_bytes() == (tmp_path / "full" / "results.jsonl").read_bytes()
  again = cli.main(args(checkpoint, data, out))  # finished: nothing left to decode
  assert again["throughput"]["decoded_this_run"] == 0 and again["metrics"] == summary["metrics"]
  capsys.readouterr()
  with pytest.raises(SystemExit):
    cli.main(args(checkpoint, data, out, "--gen-length", "4"))
  assert "different" in capsys.readouterr().err


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@pytest.mark.slow  # three fresh processes (about 20 s); run with `make test-all`
def test_two_processes_match_one(files, tmp_path):
  """1 process x 2 devices vs 2 processes x 1 device: the same sharded program, the same answers."""
  checkpoint, data = files
  base = [sys.executable, "-m", "lladav_jax.eval", "--limit", "10"]
  single = subprocess.run(base + args(checkpoint, data, tmp_path / "single"), cwd=ROOT, env=subprocess_env(2),
                          capture_output=True, text=True, timeout=600)
  assert single.returncode == 0, single.stderr[-3000:]
  port = str(free_port())
  procs = [subprocess.Popen(base + args(checkpoint, data, tmp_path / "multi", "--coordinator-address",
                                        f"localhost:{port}", "--num-processes", "2", "--process-id", str(i)),
                            cwd=ROOT, env=subprocess_env(1), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True) for i in range(2)]
  outputs = [p.communicate(timeout=600)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outputs)):
    assert p.returncode == 0, f"process {i}:\n{out[-4000:]}"
  assert (tmp_path / "multi" / "results.jsonl").read_bytes() == (tmp_path / "single" / "results.jsonl").read_bytes()
  assert len((tmp_path / "multi" / "results.jsonl").read_text().splitlines()) == 10
  assert "| accuracy |" in outputs[0] and "| accuracy |" not in outputs[1]  # only process 0 reports


def test_cli_video_task_flags(checkpoint, tmp_path, capsys):
  """A video task through the command line: --video-folder, the frame flags reach the run; bad flags
  are one-line errors."""
  import pyarrow as pa
  import pyarrow.parquet as pq
  from tests import tiny
  videos = tmp_path / "clips"
  videos.mkdir()
  tiny.write_video(videos / "v1.mp4", 5)
  row = dict(videoID="v1", question_id="1-1", duration="short", domain="Knowledge", sub_category="Astronomy",
             task_type="OCR Problems", question="What?", options=["A. a", "B. b", "C. c", "D. d"], answer="A")
  data = tmp_path / "test.parquet"
  pq.write_table(pa.Table.from_pylist([row]), data)
  base = ["--checkpoint", str(checkpoint), "--data", str(data), "--no-progress"]
  summary = cli.main(base + ["--task", "videomme", "--video-folder", str(videos), "--max-frames", "2",
                             "--frame-rule", "pyav", "--output", str(tmp_path / "out")])
  assert summary["num_scored"] == 1
  assert summary["video"] == {"max_frames": 2, "frame_rule": "pyav", "token_strategy": "single",
                              "pool_mode": "bilinear"}
  for extra, message in ((["--task", "mmstar", "--video-folder", str(videos)], "--video-folder: task mmstar"),
                         (["--task", "videomme", "--max-frames", "0"], "--max-frames: max_frames must be at least 1")):
    capsys.readouterr()
    with pytest.raises(SystemExit):
      cli.main(base + extra)
    assert message in capsys.readouterr().err

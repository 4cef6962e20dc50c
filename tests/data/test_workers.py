"""Data-loading worker processes end with the process that reads them: killed with SIGKILL, the reader
leaves no worker nor resource tracker behind; a worker that dies makes the reader raise, not hang."""

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from lladav_jax.data import DataConfig, SourceSpec, make_data_iterator
from tests.data.conftest import CONFIG, conversation, write_json
from tests.train.subprocesses import ROOT, env


def alive(pid: int) -> bool:
  try:
    return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
  except psutil.NoSuchProcess:
    return False


def wait_until_gone(pids, seconds: float) -> list[int]:
  deadline = time.monotonic() + seconds
  while time.monotonic() < deadline and any(alive(pid) for pid in pids):
    time.sleep(0.1)
  return [pid for pid in pids if alive(pid)]


@pytest.fixture
def data_file(tmp_path):
  return write_json(tmp_path / "data.json", [conversation(f"Question {i}?", "A cat.") for i in range(40)])


def test_kill_9_of_the_reader_leaves_no_worker_behind(data_file, tokenizer_dir):
  reader = subprocess.Popen([sys.executable, "-m", "tests.data.worker_check", data_file, tokenizer_dir], cwd=ROOT,
                            env=env(1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  try:
    line = reader.stdout.readline()
    assert line, reader.stderr.read()[-3000:]
    pids = json.loads(line)
    assert len(pids["workers"]) == 2 and all(alive(pid) for pid in pids["workers"] + [pids["tracker"]])
  finally:
    reader.kill()
    reader.wait()
  # The workers poll their parent twice a second; the tracker follows its last client.
  assert wait_until_gone(pids["workers"] + [pids["tracker"]], 20) == []


def test_a_dying_worker_makes_the_reader_raise(data_file, tokenizer):
  config = DataConfig(sources=(SourceSpec(data_file),), batch_size=2, num_workers=2, num_epochs=None,
                      seq_len_buckets=(1024,), crop_buckets=(1,), max_length=1024, prefetch_batches=0)
  iterator = make_data_iterator(config, CONFIG, tokenizer, shard_index=0, shard_count=1)
  next(iterator)
  worker = multiprocessing.active_children()[0]
  os.kill(worker.pid, signal.SIGKILL)

  def hung(signum, frame):
    raise TimeoutError("the reader hangs on its dead worker")

  previous = signal.signal(signal.SIGALRM, hung)
  signal.alarm(120)
  try:
    with pytest.raises(RuntimeError, match="terminated unexpectedly"):
      for _ in range(1000):  # what the dead worker had buffered is read first
        next(iterator)
  finally:
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)
    iterator.close()

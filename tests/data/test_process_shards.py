"""Two JAX processes (jax.distributed on CPU) get disjoint shards that together cover the data."""

import json
import os
import pathlib
import socket
import subprocess
import sys

from tests.data.conftest import write_json
from tests.data.test_pipeline import _item

ROOT = pathlib.Path(__file__).parents[2]


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def test_two_jax_processes_read_disjoint_shards_that_cover_the_data(tmp_path, tokenizer_dir):
  # Every third record is long (> 128 tokens), so the processes pick different length buckets.
  records = [_item(i) if i % 3 else _item(i) | {"conversations": [{"from": "human", "value": f"item {i}: " + "a " * 150},
                                                                  {"from": "gpt", "value": "b"}]} for i in range(17)]
  data = write_json(tmp_path / "data.json", records)
  env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
  port = _free_port()
  procs = [subprocess.Popen([sys.executable, "-m", "tests.data.process_shard_check", str(i), "2", str(port), data,
                             tokenizer_dir, str(tmp_path / f"out{i}.json")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(2)]
  for p in procs:
    output, _ = p.communicate(timeout=300)
    assert p.returncode == 0, output[-3000:]
  results = [json.loads((tmp_path / f"out{i}.json").read_text()) for i in range(2)]
  assert [(r["process_index"], r["process_count"]) for r in results] == [(0, 2), (1, 2)]
  first, second = (set(r["ids"]) for r in results)
  assert len(results[0]["ids"]) == 9 and len(results[1]["ids"]) == 8  # records 0, 2, ... and 1, 3, ...
  assert first.isdisjoint(second) and first | second == set(range(17))
  own = [r["own_lengths"] for r in results]
  assert own[0] != own[1] and len(own[0]) == len(own[1]) == 4  # the buckets differ at some step
  agreed = [r["agreed_shapes"] for r in results]
  assert agreed[0] == agreed[1] == [[max(a, b), 1] for a, b in zip(*own)]

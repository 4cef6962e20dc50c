"""load_pretrained onto a device mesh: one process with 8 CPU devices, and two processes with 4
each (jax.distributed), where each process must read only its own parts of the checkpoint (from
safetensors and, in one process, from PyTorch .bin shards)."""

import os
import pathlib
import socket
import subprocess
import sys

import pytest

from lladav_jax.convert import operations as convert
from tests.convert import checkpoints
from tests.parity.test_lladav_parity import Reference

ROOT = pathlib.Path(__file__).parents[2]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
  root = tmp_path_factory.mktemp("sharded")
  state = checkpoints.lladav_state(Reference())
  hf = checkpoints.write_lladav(root / "hf", state, torch_dtype="float32")
  hf_bin = checkpoints.write_lladav(root / "hf_bin", state, fmt="bin", torch_dtype="float32")
  convert.import_lladav(hf, root / "ckpt", progress=False)
  return {"safetensors": (root / "ckpt", hf), "bin": (root / "ckpt", hf_bin)}


def _run(args, devices, **popen):
  env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}", JAX_PLATFORMS="cpu",
             PYTHONPATH=str(ROOT))
  return subprocess.Popen([sys.executable, "-m", "tests.convert.sharded_load_check", *map(str, args)], cwd=ROOT,
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
def test_one_process_eight_devices(converted, fmt):
  proc = _run(converted[fmt], devices=8)
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-4000:]
  assert "sharded load OK (process 0 of 1)" in out


def test_two_processes_each_read_their_own_parts(converted):
  with socket.socket() as s:
    s.bind(("localhost", 0))
    port = s.getsockname()[1]
  procs = [_run([*converted["safetensors"], i, 2, port], devices=4) for i in range(2)]
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for i, (p, out) in enumerate(zip(procs, outs)):
    assert p.returncode == 0, out[-4000:]
    assert f"sharded load OK (process {i} of 2)" in out

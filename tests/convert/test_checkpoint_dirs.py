"""What a conversion leaves in the file system: staging directories of killed runs are cleaned up by
the next run; a vision tower kept inside the checkpoint travels with it."""

import json
import os
import subprocess
import sys

import pytest

from lladav_jax.convert import __main__ as cli
from lladav_jax.convert import checkpoint_dir
from tests.convert import checkpoints
from tests.parity.test_lladav_parity import Reference


@pytest.fixture(scope="module")
def state():
  return checkpoints.bf16(checkpoints.lladav_state(Reference()))


def dead_pid() -> int:
  child = subprocess.Popen([sys.executable, "-c", "pass"])
  child.wait()
  return child.pid


def test_a_later_run_removes_what_killed_runs_left(state, tmp_path, capsys):
  src = checkpoints.write_lladav(tmp_path / "src", state)
  out = tmp_path / "out"
  killed = tmp_path / f".out{checkpoint_dir.PARTIAL_INFIX}killed"
  unnamed = tmp_path / f".out{checkpoint_dir.PARTIAL_INFIX}early"  # killed before it wrote its owner
  running = tmp_path / f".out{checkpoint_dir.PARTIAL_INFIX}running"  # another run, still going
  others = tmp_path / ".elsewhere.partial-x"  # not this output's
  for directory, pid in ((killed, dead_pid()), (unnamed, None), (running, os.getpid()), (others, dead_pid())):
    (directory / "params").mkdir(parents=True)
    if pid is not None:
      (directory / checkpoint_dir.OWNER_FILE).write_text(json.dumps({"host": os.uname().nodename, "pid": pid}))
  assert cli.run(["import", str(src), str(out), "--quiet"]) == 0
  err = capsys.readouterr().err
  assert f"removed {killed}, left by an interrupted run" in err and f"removed {unnamed}" in err
  assert not killed.exists() and not unnamed.exists() and running.exists() and others.exists()
  assert checkpoint_dir.is_checkpoint(out) and not (out / checkpoint_dir.OWNER_FILE).exists()


def test_a_tower_inside_the_checkpoint_is_found_there_and_copied_along(state, tmp_path, monkeypatch):
  """Upstream-style checkpoints keep the tower next to the weights under a relative name."""
  src = checkpoints.write_lladav(tmp_path / "src", state, mm_vision_tower="siglip-tower")
  checkpoints.write_vision_tower_config(src / "siglip-tower")
  (src / "siglip-tower" / "preprocessor_config.json").write_text("{}")
  monkeypatch.chdir(tmp_path)  # where a cwd-relative lookup finds nothing
  assert cli.run(["import", str(src), str(tmp_path / "ckpt"), "--quiet"]) == 0
  assert (tmp_path / "ckpt" / "siglip-tower" / "config.json").read_text() == \
      (src / "siglip-tower" / "config.json").read_text()
  assert cli.run(["export", str(tmp_path / "ckpt"), str(tmp_path / "hf"), "--quiet"]) == 0
  assert sorted(p.name for p in (tmp_path / "hf" / "siglip-tower").iterdir()) == [
      "config.json", "preprocessor_config.json"]
  # The exported directory imports again from anywhere: its tower resolves inside it.
  monkeypatch.chdir(tmp_path / "hf" / "siglip-tower")
  assert cli.run(["import", str(tmp_path / "hf"), "--dry-run"]) == 0

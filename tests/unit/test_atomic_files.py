"""Outputs appear whole, with the permissions `open` / `mkdir` would give under the umask."""

import os
import stat

import pytest

from lladav_jax.atomic_files import current_umask, make_temporary_directory, write_atomic


@pytest.fixture(params=[0o022, 0o027, 0o002])
def umask(request):
  old = os.umask(request.param)
  yield request.param
  os.umask(old)


def _mode(path):
  return stat.S_IMODE(os.stat(path).st_mode)


def test_files_and_directories_follow_the_umask(tmp_path, umask):
  assert current_umask() == umask
  plain = tmp_path / "plain.txt"
  plain.write_text("x")  # what the umask gives an ordinary file
  write_atomic(tmp_path / "text.txt", "héllo")
  write_atomic(tmp_path / "bytes.bin", b"\x00\x01")
  write_atomic(tmp_path / "written.bin", lambda f: f.write(b"abc"))
  for name in ("text.txt", "bytes.bin", "written.bin"):
    assert _mode(tmp_path / name) == _mode(plain)
  (tmp_path / "made").mkdir()
  assert _mode(make_temporary_directory(tmp_path, ".stage-")) == _mode(tmp_path / "made")
  assert (tmp_path / "text.txt").read_text(encoding="utf-8") == "héllo"
  assert (tmp_path / "written.bin").read_bytes() == b"abc"


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
  target = tmp_path / "out.json"
  write_atomic(target, "old")

  def fail(f):
    f.write(b"half")
    raise RuntimeError("disk full")
  with pytest.raises(RuntimeError, match="disk full"):
    write_atomic(target, fail)
  assert target.read_text() == "old"
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]

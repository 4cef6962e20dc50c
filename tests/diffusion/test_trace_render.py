"""The trace pictures: frames follow the commit steps, files are complete and well-formed."""

import os
import stat

import pytest
from PIL import Image

from lladav_jax import trace_render

PIECES = ["The", " cat", " <b>", "\n", "sat", "."]
STEPS = [1, 0, 2, 2, 1, -1]  # "." is a given suffix token


def test_terminal_frames_reveal_tokens_in_commit_order():
  frames = trace_render.terminal_frames(PIECES, STEPS, color=False)
  assert len(frames) == 3
  mask = trace_render.MASK_GLYPH
  assert frames[0].endswith(f"{mask} cat{mask}{mask}{mask}.")
  assert frames[1].endswith(f"The cat{mask}{mask}sat.")
  assert frames[2].endswith("The cat <b>\u21b5sat.")
  coloured = trace_render.terminal_summary(PIECES, STEPS)
  assert coloured.count("\x1b[0m") == len(PIECES)
  with pytest.raises(ValueError, match="6 token strings but 2 commit steps"):
    trace_render.terminal_frames(PIECES, [0, 1])


def test_html_and_png_files(tmp_path):
  page = tmp_path / "trace.html"
  trace_render.write_trace(str(page), PIECES, STEPS, title="a <test>")
  text = page.read_text("utf-8")
  assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
  assert "&lt;b&gt;" in text and "<b>" not in text and "a &lt;test&gt;" in text
  assert text.count("<tr>") == 3  # one row per step
  picture = tmp_path / "trace.png"
  trace_render.write_trace(str(picture), PIECES, STEPS)
  with Image.open(picture) as image:
    assert image.format == "PNG" and image.width == 960 and image.height > 40
  with pytest.raises(ValueError, match="trace pictures are .html or .png"):
    trace_render.write_trace(str(tmp_path / "trace.txt"), PIECES, STEPS)
  assert sorted(os.listdir(tmp_path)) == ["trace.html", "trace.png"]  # no temporary files left
  (tmp_path / "plain").write_text("")  # what the umask gives any new file: a trace is shared alike
  assert {stat.S_IMODE(os.stat(tmp_path / name).st_mode) for name in ("trace.html", "trace.png", "plain")} == {
      stat.S_IMODE(os.stat(tmp_path / "plain").st_mode)}

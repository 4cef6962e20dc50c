"""Pictures of the unmasking order: coloured terminal text, a standalone HTML page, a PNG.

Inputs are one answer's token strings (`pieces`, decoded by the caller's tokenizer) and the
`Trace.commit_steps` of that answer (the step that committed each token, -1 for given tokens such
as a suffix). Colours run from blue (committed first) to red (committed last); given tokens are grey.
"""

import html
import os
from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from lladav_jax.atomic_files import write_atomic

MASK_GLYPH = "\u2591"  # light shade: a still-masked position
GIVEN_RGB = (150, 150, 150)


def step_rgb(step: int, num_steps: int) -> tuple[int, int, int]:
  """Blue -> green -> red along the decode; grey for given tokens (step < 0)."""
  if step < 0:
    return GIVEN_RGB
  t = step / max(1, num_steps - 1)
  if t < 0.5:
    u = t / 0.5
    return (int(40 + 20 * u), int(90 + 110 * u), int(220 - 160 * u))
  u = (t - 0.5) / 0.5
  return (int(60 + 170 * u), int(200 - 150 * u), int(60 - 20 * u))


def visible(piece: str) -> str:
  """Newlines and tabs as arrows; a whitespace-only or empty piece as a visible glyph."""
  shown = piece.replace("\n", "\u21b5").replace("\t", "\u21e5")
  return shown if shown.strip() else (shown.replace(" ", "\u2423") or "\u2205")


def _num_steps(commit_steps: Sequence[int]) -> int:
  return max([int(s) for s in commit_steps] + [-1]) + 1


def _check(pieces: Sequence[str], commit_steps: Sequence[int]) -> None:
  if len(pieces) != len(commit_steps):
    raise ValueError(f"{len(pieces)} token strings but {len(commit_steps)} commit steps")


def _ansi(text: str, rgb: tuple[int, int, int], color: bool, bold: bool = False) -> str:
  if not color:
    return text
  return f"\x1b[{'1;' if bold else ''}38;2;{rgb[0]};{rgb[1]};{rgb[2]}m{text}\x1b[0m"


def terminal_frames(pieces: Sequence[str], commit_steps: Sequence[int], *, color: bool = True) -> list[str]:
  """One line per step: the tokens committed up to that step (this step's in bold), masks elsewhere."""
  _check(pieces, commit_steps)
  n = _num_steps(commit_steps)
  frames = []
  for step in range(n):
    parts = [_ansi(visible(piece), step_rgb(done, n), color, bold=done == step) if done <= step else MASK_GLYPH
             for piece, done in zip(pieces, commit_steps)]
    frames.append(f"step {step + 1:>3}/{n}  " + "".join(parts))
  return frames


def terminal_summary(pieces: Sequence[str], commit_steps: Sequence[int], *, color: bool = True) -> str:
  """The answer with every token coloured by the step that committed it."""
  _check(pieces, commit_steps)
  n = _num_steps(commit_steps)
  return "".join(_ansi(piece, step_rgb(s, n), color) for piece, s in zip(pieces, commit_steps))


def html_page(pieces: Sequence[str], commit_steps: Sequence[int], *, title: str = "Unmasking order") -> str:
  """A standalone page: the coloured answer (hover shows the step), then one row per step."""
  _check(pieces, commit_steps)
  n = _num_steps(commit_steps)

  def span(piece, step, shown=True):
    rgb = step_rgb(step, n)
    label = "given" if step < 0 else f"step {step + 1}"
    text = html.escape(visible(piece)) if shown else MASK_GLYPH
    style = f"background:rgba({rgb[0]},{rgb[1]},{rgb[2]},0.35)" if shown else "color:#bbb"
    return f'<span class="t" style="{style}" title="{label}">{text}</span>'

  answer = "".join(span(p, s) for p, s in zip(pieces, commit_steps))
  rows = []
  for step in range(n):
    cells = "".join(span(p, s, shown=s <= step) for p, s in zip(pieces, commit_steps))
    rows.append(f"<tr><th>{step + 1}</th><td>{cells}</td></tr>")
  return (
      "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
      f"<title>{html.escape(title)}</title><style>"
      "body{font-family:monospace;margin:2em}.t{white-space:pre;border-radius:3px;padding:0 1px}"
      "th{text-align:right;padding-right:1em;color:#888;font-weight:normal}td{white-space:nowrap}"
      f"</style></head><body><h3>{html.escape(title)}</h3><p>{answer}</p>"
      f"<p>{len(pieces)} tokens, {n} steps; colour = step (blue first, red last, grey given)</p>"
      f"<table>{''.join(rows)}</table></body></html>\n")


def png_image(pieces: Sequence[str], commit_steps: Sequence[int], *, width: int = 960) -> Image.Image:
  """The answer wrapped into lines, each token on a box coloured by its step, with a legend."""
  _check(pieces, commit_steps)
  n = _num_steps(commit_steps)
  font = ImageFont.load_default()
  pad, line_height = 12, 20
  lines, x, line = [], pad, []
  for piece, step in zip(pieces, commit_steps):
    text = visible(piece)
    w = int(font.getlength(text)) + 4
    if x + w > width - pad and line:
      lines.append(line)
      x, line = pad, []
    line.append((x, w, text, step))
    x += w
  lines.append(line)
  height = pad * 3 + line_height * (len(lines) + 1)
  image = Image.new("RGB", (width, height), "white")
  draw = ImageDraw.Draw(image)
  for row, items in enumerate(lines):
    y = pad + row * line_height
    for x0, w, text, step in items:
      draw.rectangle([x0, y, x0 + w - 1, y + line_height - 3], fill=step_rgb(step, n))
      draw.text((x0 + 2, y + 3), text, fill="white", font=font)
  y = pad * 2 + line_height * len(lines)
  bar = width - 2 * pad - 140
  for i in range(bar):  # legend: step 1 .. n
    draw.line([pad + i, y, pad + i, y + 10], fill=step_rgb(round(i / max(1, bar - 1) * (n - 1)), n))
  draw.text((pad + bar + 8, y), f"step 1 .. {n}", fill="black", font=font)
  return image


TRACE_SUFFIXES = (".html", ".htm", ".png")


def check_trace_path(path: str) -> None:
  """Raises ValueError unless `path` names a kind of trace picture write_trace makes."""
  if os.path.splitext(path)[1].lower() not in TRACE_SUFFIXES:
    raise ValueError(f"{path}: trace pictures are .html or .png files")


def write_trace(path: str, pieces: Sequence[str], commit_steps: Sequence[int], *,
                title: str = "Unmasking order") -> None:
  """Writes `path` atomically as HTML (.html/.htm) or PNG (.png)."""
  check_trace_path(path)
  suffix = os.path.splitext(path)[1].lower()

  def write(f):
    if suffix == ".png":
      png_image(pieces, commit_steps).save(f, format="PNG")
    else:
      f.write(html_page(pieces, commit_steps, title=title).encode("utf-8"))
  write_atomic(path, write)

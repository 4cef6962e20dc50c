"""What a conversion prints: the mapping table (--dry-run), a progress bar, and the summary."""

import sys
import threading
import time
from typing import TextIO

import numpy as np

from lladav_jax.convert.conversion_plan import Leaf, ConversionPlan

TOWERS = ("language_model", "vision_tower", "mm_projector", "image_newline")
_TRANSFORM_NOTES = {"identity": "", "linear": "transposed", "conv": "conv OIHW->HWIO"}


def gigabytes(nbytes: int) -> str:
  return f"{nbytes / 1e9:.2f} GB" if nbytes >= 1e8 else f"{nbytes / 1e6:.2f} MB"


def mapping_table(plan: ConversionPlan) -> list[str]:
  """One row per parameter leaf: path, shape, dtype, source keys, transform."""
  rows = [("parameter", "shape", "dtype", "source", "transform")]
  for leaf in plan.leaves:
    rows.append((leaf.name, "x".join(map(str, leaf.shape)), str(leaf.dtype), leaf.source,
                 _TRANSFORM_NOTES.get(leaf.transform, leaf.transform)))
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  lines = [("  ".join(c.ljust(w) for c, w in zip(r[:4], widths)) + "  " + r[4]).rstrip() for r in rows]
  lines.insert(1, "-" * len(lines[0]))
  return lines + skipped_lines(plan)


def skipped_lines(plan: ConversionPlan) -> list[str]:
  lines = [f"skipped {len(keys)} source key(s): {reason}" for reason, keys in plan.skipped.items()]
  return lines + [f"note: {note}" for note in plan.notes]


def tower_counts(leaves: list[Leaf]) -> dict[str, dict]:
  """Per tower: parameter count, bytes, dtypes."""
  counts: dict[str, dict] = {}
  for leaf in leaves:
    tower = counts.setdefault(leaf.path[0], {"params": 0, "bytes": 0, "dtypes": set()})
    tower["params"] += int(np.prod(leaf.shape, dtype=np.int64))
    tower["bytes"] += leaf.nbytes
    tower["dtypes"].add(str(leaf.dtype))
  return counts


def summary(title: str, plan: ConversionPlan, seconds: float) -> list[str]:
  counts = tower_counts(plan.leaves)
  lines = [title, f"  {'tower':<16}{'parameters':>16}{'bytes':>12}  dtype"]
  for name in sorted(counts, key=lambda n: TOWERS.index(n) if n in TOWERS else len(TOWERS)):
    c = counts[name]
    lines.append(f"  {name:<16}{c['params']:>16,}{gigabytes(c['bytes']):>12}  {', '.join(sorted(c['dtypes']))}")
  total_params = sum(c["params"] for c in counts.values())
  lines.append(f"  {'total':<16}{total_params:>16,}{gigabytes(plan.nbytes):>12}")
  tensors = sum(leaf.num_source_tensors for leaf in plan.leaves)
  rate = plan.source_bytes / 1e6 / max(seconds, 1e-9)
  lines.append(f"  read {tensors} source tensors ({gigabytes(plan.source_bytes)}) in {seconds:.1f} s "
               f"({rate:.0f} MB/s)")
  return lines + ["  " + line for line in skipped_lines(plan)]


class Progress:
  """A progress bar over bytes. On a terminal it redraws one line; in a log it prints every 10%."""

  def __init__(self, total_bytes: int, label: str, stream: TextIO | None = None, enabled: bool = True):
    self.total, self.label, self.done, self.count = max(total_bytes, 1), label, 0, 0
    self.stream = stream or sys.stderr
    self.enabled = enabled
    self.start = time.monotonic()
    self._last_decile = -1
    self._lock = threading.Lock()  # leaves may complete on a writer thread

  def advance(self, nbytes: int, name: str) -> None:
    if not self.enabled:
      return
    with self._lock:
      self.done += nbytes
      self.count += 1
      fraction = min(self.done / self.total, 1.0)
      rate = self.done / 1e6 / max(time.monotonic() - self.start, 1e-9)
      bar = "#" * int(30 * fraction) + "." * (30 - int(30 * fraction))
      text = (f"{self.label} [{bar}] {100 * fraction:5.1f}% {gigabytes(self.done)} / {gigabytes(self.total)} "
              f"{rate:6.0f} MB/s  {name}")
      if self.stream.isatty():
        self.stream.write("\r\033[K" + text[:200])
      elif int(10 * fraction) > self._last_decile:
        self._last_decile = int(10 * fraction)
        self.stream.write(text + "\n")
      self.stream.flush()

  def close(self) -> None:
    if self.enabled and self.stream.isatty():
      self.stream.write("\n")
      self.stream.flush()

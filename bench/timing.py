"""Timing runs side by side: every run in turn, so that all of them see the same machine state."""

import statistics
import time
from typing import Any, Callable


def alternate(runs: dict[str, Callable[[], Any]], repeats: int, *,
              warm_up: bool = True) -> tuple[dict[str, float], dict[str, Any]]:
  """Each run once untimed (`warm_up`), then `repeats` rounds of all runs in turn
  -> (median seconds per run, each run's last result)."""
  if warm_up:
    for run in runs.values():
      run()
  times = {name: [] for name in runs}
  results = {}
  for _ in range(repeats):
    for name, run in runs.items():
      start = time.perf_counter()
      results[name] = run()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(t) for name, t in times.items()}, results

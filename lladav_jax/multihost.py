"""Multi-process runs: this process's rows of the batch, global arrays, agreeing on a stop.

Every process runs the same program. Each reads only its own rows of the global batch (its data
shard) and the global batch arrays are assembled from the process-local parts, so no host ever holds
the whole batch. (jax.distributed is started by the command lines: `cli.start_distributed`.)
"""

import signal
import threading

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding


def process_rows(sharding: NamedSharding, global_batch: int) -> tuple[int, int]:
  """The contiguous range of global batch rows that this process's devices hold."""
  shape = (global_batch,)
  rows = set()
  for device, index in sharding.devices_indices_map(shape).items():
    if device.process_index == jax.process_index():
      rows.update(range(*index[0].indices(global_batch)))
  start, stop = min(rows), max(rows) + 1
  if len(rows) != stop - start:
    raise ValueError(f"process {jax.process_index()} holds non-contiguous batch rows {sorted(rows)}; "
                     "use a mesh whose batch axes follow the process order")
  return start, stop


def global_batch(local: dict[str, np.ndarray], shardings: dict[str, NamedSharding],
                 global_rows: int) -> dict[str, jax.Array]:
  """Global arrays [global_rows, ...] from this process's rows of each host array."""
  out = {}
  for key, sharding in shardings.items():
    value = local[key]
    out[key] = jax.make_array_from_process_local_data(sharding, value, (global_rows,) + value.shape[1:])
  return out


class StopSignal:
  """Remembers SIGTERM (preemption) so the loop can save and stop at a step boundary; all processes
  agree on stopping (one process's signal stops everyone at the same step)."""

  def __init__(self):
    self._event = threading.Event()
    self._previous = None

  def install(self):
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, lambda *_: self._event.set())
    return self

  def uninstall(self):
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def should_stop(self) -> bool:
    local = self._event.is_set()
    if jax.process_count() == 1:
      return local
    flags = multihost_utils.process_allgather(np.asarray(local))
    return bool(np.any(flags))

"""Data-loading worker processes that end with the process that started them.

grain's `mp_prefetch` workers are spawned processes; when their parent is killed (kill -9, the OOM
killer) nothing tells them to stop, and each one kept its memory (hundreds of MB) for minutes, with
multiprocessing's resource tracker waiting on them. Each worker therefore starts a daemon thread that
polls its parent's pid and ends the worker once the parent is gone; the resource tracker then sees its
last client go, removes the shared memory left behind and exits too.

PR_SET_PDEATHSIG is not used: it fires when the *thread* that started the child ends, and grain starts
its workers from a thread pool.
"""

import functools
import os
import threading
import time
from typing import Callable

POLL_SECONDS = 0.5


def parent_watch(parent_pid: int | None = None) -> Callable[[int, int], None]:
  """A grain `worker_init_fn` (worker index, worker count) that makes each worker end with `parent_pid`
  (default: the calling process)."""
  return functools.partial(watch_parent, os.getpid() if parent_pid is None else parent_pid)


def watch_parent(parent_pid: int, worker_index: int = 0, worker_count: int = 1) -> None:
  del worker_index, worker_count  # every worker watches the same parent
  threading.Thread(target=_exit_when_orphaned, args=(parent_pid,), name="lladav-parent-watch", daemon=True).start()


def _exit_when_orphaned(parent_pid: int) -> None:
  while os.getppid() == parent_pid:
    time.sleep(POLL_SECONDS)
  os._exit(1)  # no clean-up to wait for: the parent that would read our results is gone

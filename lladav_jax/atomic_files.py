"""Files and directories that appear whole or not at all, with the permissions the umask allows.

Every output is first written under a hidden temporary name in its final directory, then renamed
into place, so a killed run leaves either the old file or the new one. Temporary files from
`tempfile` are created 0600 (directories 0700); they are widened here to what `open` / `mkdir`
would give under the process umask (0644 / 0755 for the usual 022), so outputs can be shared on a
cluster.
"""

import contextlib
import os
import pathlib
import tempfile
from typing import IO, Callable



def current_umask() -> int:
  """The process umask, read without changing it where /proc says it (Linux)."""
  try:
    with open("/proc/self/status", encoding="ascii") as f:
      for line in f:
        if line.startswith("Umask:"):
          return int(line.split()[1], 8)
  except OSError:
    pass
  mask = os.umask(0o022)  # elsewhere reading the umask means setting it: put it straight back
  os.umask(mask)
  return mask


def write_atomic(path: str | os.PathLike, content: str | bytes | Callable[[IO[bytes]], None]) -> None:
  """Writes `content` (text as UTF-8, bytes, or a function that writes to a binary file) to `path`."""
  path = pathlib.Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
  try:
    with os.fdopen(fd, "wb") as f:
      if callable(content):
        content(f)
      else:
        f.write(content.encode("utf-8") if isinstance(content, str) else content)
      f.flush()
      os.fsync(f.fileno())
    os.chmod(tmp, 0o666 & ~current_umask())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def make_temporary_directory(parent: str | os.PathLike, prefix: str) -> pathlib.Path:
  """A new empty directory in `parent`, with the umask's permissions."""
  directory = pathlib.Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
  os.chmod(directory, 0o777 & ~current_umask())
  return directory

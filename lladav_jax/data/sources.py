"""Random access to the records of LLaVA JSON / JSONL files without parsing them.

A file is scanned once for the byte span of every record (a JSON array's top-level elements, or a
JSONL file's non-empty lines) and the spans are saved as an int64 [N, 2] `.npy` index next to it (or in
`index_dir`). Every process memory-maps the index and reads only the records it is given, with one
`pread` each, so a file of millions of records is never parsed whole, on any host. The index is
rebuilt when the file's size or modification time changes.
"""

import dataclasses
import hashlib
import json
import mmap
import os
import re

import numpy as np

from lladav_jax.atomic_files import write_atomic
from lladav_jax.data.records import THINK_MODES, THINK_NONE

_INDEX_VERSION = 1
# A JSON string (skipped whole, escapes included), an opening bracket, a closing bracket, or a comma.
_JSON_TOKENS = re.compile(rb'"[^"\\]*+(?:\\.[^"\\]*+)*+"|([\[{])|([\]}])|(,)', re.S)
_CHUNK = 1 << 26


class SourceError(ValueError):
  """A data file (not a single record) that cannot be used; the message names the file."""


@dataclasses.dataclass(frozen=True)
class SourceSpec:
  """One data file of a mixture, with upstream's per-file options.

  sampling: upstream's `sampling_strategy`: "all", "first:N", "end:N" or "random:N"; N may be "P%".
  image_folder / image_folder_fallback: upstream's image_folder and image_folder_2 (the second is tried
  when a file is missing from the first); relative media paths without a folder are taken relative
  to the data file. think: a records.THINK_MODES tag for the stage-3 mix.
  """

  path: str
  image_folder: str | None = None
  image_folder_fallback: str | None = None
  video_folder: str | None = None
  sampling: str = "all"
  think: str = THINK_NONE

  def __post_init__(self):
    parse_sampling(self.sampling)
    if self.think not in THINK_MODES:
      raise ValueError(f"{self.path}: think {self.think!r}; choices: {THINK_MODES}")

  @property
  def media_dir(self) -> str:
    return os.path.dirname(os.path.abspath(self.path))


def parse_sampling(sampling: str) -> tuple[str, int | None, bool]:
  """"first:10" -> ("first", 10, False); "random:5%" -> ("random", 5, True); "all" -> ("all", None, False)."""
  if sampling == "all":
    return "all", None, False
  kind, _, number = sampling.partition(":")
  percent = number.endswith("%")
  try:
    value = int(number[:-1] if percent else number)
  except ValueError:
    value = -1
  if kind not in ("first", "end", "random") or value < 0:
    raise ValueError(f"sampling strategy {sampling!r}; expected all, first:N, end:N or random:N (N a count "
                     "or an integer percentage P%)")
  return kind, value, percent


def sampled_count(sampling: str, count: int) -> int:
  """How many of `count` records a strategy takes (upstream: ceil(P * count / 100) for P%)."""
  kind, value, percent = parse_sampling(sampling)
  if value is None:
    return count
  return min(count, -(-value * count // 100) if percent else value)


def load_mixture_yaml(path: str, **defaults) -> list[SourceSpec]:
  """Upstream's data yaml (`datasets: [{json_path, sampling_strategy}, ...]`) -> SourceSpecs; `defaults`
  (image_folder=..., think=...) apply to every entry, which may also set those keys itself."""
  import yaml  # only needed for this format
  with open(path, encoding="utf-8") as f:
    data = yaml.safe_load(f)
  entries = data.get("datasets") if isinstance(data, dict) else None
  if not isinstance(entries, list):
    raise SourceError(f"{path}: expected a 'datasets' list")
  specs = []
  for i, entry in enumerate(entries):
    if not isinstance(entry, dict) or "json_path" not in entry:
      raise SourceError(f"{path}: datasets[{i}] needs a json_path")
    options = dict(defaults)
    options.update({k: v for k, v in entry.items() if k not in ("json_path", "sampling_strategy")})
    specs.append(SourceSpec(entry["json_path"], sampling=entry.get("sampling_strategy", "all"), **options))
  return specs


def _json_array_spans(path: str, data) -> np.ndarray:
  """Byte spans of the top-level elements of a JSON array (whitespace around them included)."""
  spans, depth, start, closed = [], 0, None, False
  for match in _JSON_TOKENS.finditer(data):
    kind = match.lastindex
    if kind is None:  # a string
      if depth == 0:
        raise SourceError(f"{path}: a JSON string at byte {match.start()} outside the top-level array")
      continue
    if kind == 1:
      if depth == 0:
        if closed or data[match.start()] != ord("["):
          raise SourceError(f"{path}: expected one top-level JSON array (byte {match.start()})")
        start = match.end()
      depth += 1
    elif kind == 2:
      depth -= 1
      if depth < 0:
        raise SourceError(f"{path}: unbalanced closing bracket at byte {match.start()}")
      if depth == 0:
        spans.append((start, match.start()))
        closed = True
    elif depth == 1:
      spans.append((start, match.start()))
      start = match.end()
  if depth != 0 or not closed:
    raise SourceError(f"{path}: the top-level JSON array is not closed (truncated file?)")
  out = np.asarray(spans, np.int64).reshape(-1, 2)
  # `[]` and a trailing `,]` leave one whitespace-only span; drop those, keep everything else for the reader.
  short = np.flatnonzero(out[:, 1] - out[:, 0] < 64)
  empty = [i for i in short if not bytes(data[out[i, 0]:out[i, 1]]).strip()]
  return np.delete(out, empty, axis=0)


def _line_spans(data) -> np.ndarray:
  """Byte spans of the non-empty lines (a trailing "\\r" counts as empty)."""
  size = len(data)
  ends = [np.flatnonzero(np.frombuffer(data, np.uint8, count=min(_CHUNK, size - off), offset=off) == 10) + off
          for off in range(0, size, _CHUNK)]
  newlines = np.concatenate(ends) if ends else np.zeros(0, np.int64)
  starts = np.concatenate([[0], newlines + 1])
  stops = np.concatenate([newlines, [size]])
  spans = np.stack([starts, stops], axis=1).astype(np.int64)
  length = spans[:, 1] - spans[:, 0]
  keep = length > 1
  one = np.flatnonzero(length == 1)
  keep[one] = np.frombuffer(data, np.uint8)[spans[one, 0]] != 13
  return spans[keep]


def scan_file(path: str) -> np.ndarray:
  """Record byte spans of a `.json` array or a JSON-lines file: int64 [N, 2] (start, end)."""
  with open(path, "rb") as f:
    if os.fstat(f.fileno()).st_size == 0:
      return np.zeros((0, 2), np.int64)
    with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
      first = re.search(rb"\S", data)
      if first is None:
        return np.zeros((0, 2), np.int64)
      if not path.endswith(".jsonl") and data[first.start()] == ord("["):
        return _json_array_spans(path, data)
      return _line_spans(data)


def index_path(path: str, index_dir: str | None) -> str:
  """Next to the data file when its folder is writable, else in `index_dir` (default ~/.cache/lladav_jax)."""
  if index_dir is None and os.access(os.path.dirname(os.path.abspath(path)), os.W_OK):
    return path + ".lladav-index.npy"
  index_dir = index_dir or os.path.join(os.path.expanduser("~"), ".cache", "lladav_jax", "index")
  digest = hashlib.sha1(os.path.abspath(path).encode()).hexdigest()[:16]
  return os.path.join(index_dir, f"{os.path.basename(path)}.{digest}.lladav-index.npy")


def load_or_build_index(path: str, index_dir: str | None = None) -> str:
  """Returns the path of an up-to-date index of `path`, building it (atomically) if needed."""
  try:
    stat = os.stat(path)
  except OSError as e:
    raise SourceError(f"data file {path}: {e.strerror}") from e
  out = index_path(path, index_dir)
  meta_path = out[:-len(".npy")] + ".json"
  meta = {"version": _INDEX_VERSION, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
  try:
    with open(meta_path, encoding="utf-8") as f:
      if {k: v for k, v in json.load(f).items() if k in meta} == meta and os.path.exists(out):
        return out
  except (OSError, ValueError):
    pass
  try:
    spans = scan_file(path)
  except OSError as e:  # a directory, no permission to read
    raise SourceError(f"data file {path}: {e.strerror}") from e
  directory = os.path.dirname(out) or "."
  try:
    os.makedirs(directory, exist_ok=True)
    # The index first, the metadata (which marks it valid) last, each by an atomic rename.
    write_atomic(out, lambda f: np.save(f, spans))
    write_atomic(meta_path, json.dumps(dict(meta, count=len(spans))))
  except OSError as e:
    raise SourceError(f"index of {path}: cannot write {out}: {e.strerror} (set the data config's index_dir)") from e
  return out


class RecordSource:
  """The records of several files as one random-access source (grain's RandomAccessDataSource).

  Element i is {"source": file number, "index": record number in that file, "data": raw JSON bytes}.
  Only paths and the sampling selections are pickled to worker processes; each process opens the
  files and memory-maps the indexes itself.
  """

  def __init__(self, specs: list[SourceSpec], index_dir: str | None = None, seed: int = 0):
    self._spans = None
    self._fds = None  # set first: __del__ runs even when a file below cannot be read
    if not specs:
      raise ValueError("no data sources given")
    self.specs = list(specs)
    self._index_paths = [load_or_build_index(s.path, index_dir) for s in self.specs]
    self._selections = []  # per file: (first, stop) of a contiguous range, or an array of indices
    rng = np.random.default_rng(seed)
    for spec, idx_path in zip(self.specs, self._index_paths):
      count = int(np.load(idx_path, mmap_mode="r").shape[0])
      kind = parse_sampling(spec.sampling)[0]
      n = sampled_count(spec.sampling, count)
      if kind in ("all", "first"):
        self._selections.append((0, n))
      elif kind == "end":
        self._selections.append((count - n, count))
      else:  # random: a seeded subset (upstream shuffles unseeded), kept in file order
        self._selections.append(np.sort(rng.permutation(count)[:n]))
    sizes = [s[1] - s[0] if isinstance(s, tuple) else len(s) for s in self._selections]
    self._bounds = np.cumsum([0] + sizes)

  def __len__(self) -> int:
    return int(self._bounds[-1])

  def sizes(self) -> list[int]:
    return [int(n) for n in np.diff(self._bounds)]

  def _open(self):
    self._spans = [np.load(p, mmap_mode="r") for p in self._index_paths]
    self._fds = [os.open(s.path, os.O_RDONLY) for s in self.specs]

  def locate(self, i: int) -> tuple[int, int]:
    """Global record number -> (file number, record number in that file)."""
    if not 0 <= i < len(self):
      raise IndexError(f"record {i} out of range [0, {len(self)})")
    file = int(np.searchsorted(self._bounds, i, side="right")) - 1
    selection = self._selections[file]
    offset = i - int(self._bounds[file])
    return file, int(selection[0] + offset if isinstance(selection, tuple) else selection[offset])

  def __getitem__(self, i: int) -> dict:
    if self._fds is None:
      self._open()
    file, index = self.locate(int(i))
    start, end = (int(x) for x in self._spans[file][index])
    data = os.pread(self._fds[file], end - start, start)
    return {"source": file, "index": index, "data": data}

  def __getstate__(self):
    state = dict(self.__dict__)
    state["_spans"] = state["_fds"] = None
    return state

  def __del__(self):
    for fd in self._fds or ():
      try:
        os.close(fd)
      except OSError:
        pass


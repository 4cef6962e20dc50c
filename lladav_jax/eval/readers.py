"""Reading benchmark files into rows: parquet (the lmms-eval Hugging Face datasets, read with
pyarrow), TSV (MMBench / VLMEvalKit releases, base64 images), JSONL (one JSON object a line) and
JSON (one array of objects, as MLVU's annotation files).

    for row in read_rows(["MMBench/en/dev-00000-of-00001.parquet"]):
      row.values["question"], row.source, row.number

A directory stands for every .parquet / .tsv / .jsonl / .json file in it (sorted by name). Nothing is
fetched from the network. Rows keep the file's values as Python objects (parquet images stay
`{"bytes": ..., "path": ...}` dicts); `image_sources` turns image cells into bytes or paths.
"""

import base64
import binascii
import csv
import dataclasses
import glob
import json
import os
import sys
from typing import Iterator, Sequence

import numpy as np

SUFFIXES = (".parquet", ".tsv", ".jsonl", ".json")


class DataError(ValueError):
  """A benchmark file that cannot be read; the message names the file (and row, column)."""


@dataclasses.dataclass(frozen=True)
class Row:
  source: str  # the file
  number: int  # 0-based row (JSONL: line number - 1)
  values: dict

  def where(self, column: str | None = None) -> str:
    at = f"{self.source} row {self.number}"
    return f"{at} column {column!r}" if column else at


def expand_paths(paths: Sequence[str | os.PathLike]) -> list[str]:
  """Files named, files matched by glob patterns, and the data files inside named directories."""
  out = []
  for path in paths:
    path = os.fspath(path)
    if os.path.isdir(path):
      found = sorted(os.path.join(path, f) for f in os.listdir(path) if f.endswith(SUFFIXES))
      if not found:
        raise DataError(f"{path}: no {', '.join(SUFFIXES)} files in this directory")
      out.extend(found)
    elif os.path.isfile(path):
      out.append(path)
    else:
      matched = sorted(glob.glob(path))
      if not matched:
        raise DataError(f"{path}: no such file or directory")
      out.extend(matched)
  return out


def read_rows(paths: Sequence[str | os.PathLike]) -> Iterator[Row]:
  for path in expand_paths(paths):
    if path.endswith(".parquet"):
      yield from _read_parquet(path)
    elif path.endswith(".tsv"):
      yield from _read_tsv(path)
    elif path.endswith(".jsonl"):
      yield from _read_jsonl(path)
    elif path.endswith(".json"):
      yield from _read_json(path)
    else:
      raise DataError(f"{path}: unknown file type; expected one of {', '.join(SUFFIXES)}")


def _read_parquet(path: str) -> Iterator[Row]:
  try:
    import pyarrow.parquet as pq
  except ImportError as e:  # pragma: no cover - pyarrow is a runtime requirement
    raise DataError(f"{path}: reading parquet needs pyarrow (pip install pyarrow)") from e
  try:
    file = pq.ParquetFile(path)
    number = 0
    for batch in file.iter_batches(batch_size=256):
      for values in batch.to_pylist():
        yield Row(path, number, values)
        number += 1
  except (OSError, ValueError) as e:  # pyarrow's ArrowInvalid is a ValueError
    raise DataError(f"{path}: cannot read parquet ({e})") from e


def _read_tsv(path: str) -> Iterator[Row]:
  csv.field_size_limit(sys.maxsize)  # base64 images make very long fields
  with open(path, newline="", encoding="utf-8") as f:
    rows = []
    for number, values in enumerate(csv.DictReader(f, delimiter="\t")):
      if None in values:
        raise DataError(f"{path} row {number}: more fields than the header has columns")
      rows.append(dict(values))
  # VLMEvalKit stores a repeated image once: other rows hold the `index` of the row that has it.
  by_index = {r.get("index"): r["image"] for r in rows if len(r.get("image") or "") > 64}
  for number, values in enumerate(rows):
    image = values.get("image")
    if image is not None and len(image) <= 64 and image in by_index:
      values["image"] = by_index[image]
    yield Row(path, number, values)


def _read_jsonl(path: str) -> Iterator[Row]:
  with open(path, encoding="utf-8") as f:
    for line_number, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        values = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"{path} line {line_number}: not valid JSON ({e.msg} at column {e.colno})") from e
      if not isinstance(values, dict):
        raise DataError(f"{path} line {line_number}: expected a JSON object, got {type(values).__name__}")
      yield Row(path, line_number - 1, values)


def _read_json(path: str) -> Iterator[Row]:
  try:
    with open(path, encoding="utf-8") as f:
      values = json.load(f)
  except json.JSONDecodeError as e:
    raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from e
  if not isinstance(values, list):
    raise DataError(f"{path}: expected a JSON array of objects, got {type(values).__name__}")
  for number, item in enumerate(values):
    if not isinstance(item, dict):
      raise DataError(f"{path} row {number}: expected a JSON object, got {type(item).__name__}")
    yield Row(path, number, item)


def is_missing(value) -> bool:
  """None, NaN, empty strings, and the "nan" strings pandas writes into TSV files."""
  if value is None:
    return True
  if isinstance(value, float) and np.isnan(value):
    return True
  return isinstance(value, str) and value.strip().lower() in ("nan", "")


def image_sources(value, row: Row, column: str) -> list:
  """Image cells as bytes (encoded image files) or file paths.

  Accepts a parquet image dict (`bytes`, else `path`), raw bytes, a list of these (SEED-Bench), a
  base64 string (TSV files), or a file path (JSONL; relative to the data file's directory).
  """
  if isinstance(value, (list, tuple, np.ndarray)):
    return [source for item in value for source in image_sources(item, row, column)]
  if isinstance(value, dict):
    if value.get("bytes"):
      return [bytes(value["bytes"])]
    if value.get("path"):
      return [_resolve(value["path"], row)]
    raise DataError(f"{row.where(column)}: image entry has neither bytes nor a path")
  if isinstance(value, (bytes, bytearray)):
    return [bytes(value)]
  if isinstance(value, str):
    if row.source.endswith(".tsv"):
      try:
        return [base64.b64decode(value, validate=True)]
      except (binascii.Error, ValueError) as e:
        raise DataError(f"{row.where(column)}: not a base64-encoded image ({e})") from e
    return [_resolve(value, row)]
  raise DataError(f"{row.where(column)}: cannot read an image from a {type(value).__name__}")


def _resolve(path: str, row: Row) -> str:
  path = os.path.expanduser(path)
  return path if os.path.isabs(path) else os.path.join(os.path.dirname(os.path.abspath(row.source)), path)

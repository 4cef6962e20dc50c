"""What a benchmark task is: how a file row becomes a `Record` (question text, images, gold answer),
the decoding settings LLaDA-V's evaluation uses for it, how an answer is scored, and how the scores
are summarised.

A task never touches the model: the runner turns records into prompts, decodes, and hands each
answer back to `Task.score`; `Task.summarize` reads only the per-sample results (so a resumed run
summarises exactly like an uninterrupted one).
"""

import dataclasses
import json
import re
from collections import defaultdict
from typing import Any, Iterable, Sequence

from lladav_jax.eval.readers import DataError, Row, image_sources, is_missing


class RecordError(ValueError):
  """One row that cannot become a record (a missing answer, an unreadable image cell, ...)."""


@dataclasses.dataclass(frozen=True)
class Decoding:
  """Per-task decoding, as LLaDA-V's eval/scripts/evaluate.sh sets it.

  stops: stop strings before the always-present `<|eot_id|>` (upstream order); think: the stage-3
  tag appended to questions with images ("think", "no_think" or None).
  """

  gen_length: int
  steps: int
  block_length: int
  stops: tuple[str, ...] = ()
  think: str | None = "no_think"


MULTIPLE_CHOICE = Decoding(gen_length=2, steps=2, block_length=2)


@dataclasses.dataclass(frozen=True)
class Record:
  """One question. `index` is its position in the input (results are written in this order);
  `question` is the user text, usually without image placeholders (they then go in front, as
  upstream's wrapper puts them), or with one `<image>` per image where the benchmark places them;
  `images` are bytes, file paths or PIL images; `video` is a video file's path (then `images` is
  empty); `target` and `meta` are JSON-ready."""

  index: int
  id: str
  question: str
  images: tuple
  target: Any
  meta: dict = dataclasses.field(default_factory=dict)
  video: str | None = None


class Task:
  """Base class of the benchmark tasks (see `tasks/__init__.py` for the registry)."""

  name: str = ""
  decoding: Decoding = MULTIPLE_CHOICE
  required_columns: tuple[str, ...] = ()
  description: str = ""

  def decoding_for(self, records: Sequence[Record]) -> Decoding:
    """The decoding for these records (the task's fixed setting unless a task says otherwise)."""
    return self.decoding

  def keeps(self, row: Row) -> bool:
    """Whether a row belongs to the task (a benchmark folder may also hold files of other tasks)."""
    return True

  def record(self, row: Row, index: int) -> Record:
    raise NotImplementedError

  def score(self, record: Record, prediction: str) -> dict:
    """Per-sample fields written to the results file: at least "score" (a float)."""
    raise NotImplementedError

  def summarize(self, results: Sequence[dict]) -> dict:
    """{"metrics": {name: value}, "breakdown": {group: {value: {"score", "count"}}}} from the
    per-sample results (each: the record's meta, "target", "prediction" and `score`'s fields)."""
    return {"metrics": {"accuracy": mean_score(results)}, "breakdown": {}}

  def check_columns(self, row: Row) -> None:
    missing = [c for c in self.required_columns if c not in row.values]
    if missing:
      raise DataError(f"{row.source}: task {self.name} needs column(s) {missing}; the file has "
                      f"{sorted(row.values)}")


def load_records(task: Task, rows: Iterable[Row], limit: int | None = None) -> tuple[list[Record], list[dict]]:
  """Records of the rows (at most `limit`), and the rows that could not be used: each
  {"index", "id", "error"}, the error naming file, row and column."""
  records, failures = [], []
  for index, row in enumerate(row for row in rows if task.keeps(row)):
    if limit is not None and index >= limit:
      break
    if index == 0:
      task.check_columns(row)
    try:
      records.append(task.record(row, index))
    except (RecordError, DataError) as e:
      failures.append({"index": index, "id": str(row.values.get("id", index)), "error": str(e)})
  return records, failures


# --- helpers for the task definitions ---

def value(row: Row, column: str, *, required: bool = True):
  found = row.values.get(column)
  if required and is_missing(found):
    raise RecordError(f"{row.where(column)}: missing value")
  return found


def text(row: Row, column: str, *, required: bool = True) -> str:
  found = value(row, column, required=required)
  return "" if is_missing(found) else str(found)


def images(row: Row, *columns: str) -> tuple:
  out = []
  for column in columns:
    cell = row.values.get(column)
    if cell is None or (isinstance(cell, (list, tuple)) and not cell):
      continue
    try:
      out.extend(image_sources(cell, row, column))
    except DataError as e:
      raise RecordError(str(e)) from e
  if not out:
    raise RecordError(f"{row.where(columns[0] if len(columns) == 1 else None)}: no image in column(s) "
                      f"{list(columns)}")
  return tuple(out)


def referenced_images(row: Row, prompt: str) -> tuple:
  """MMMU's rule: the images the prompt mentions as `<image N>`, each once, in name order (column
  `image_N`); a mentioned image that the row lacks is an error."""
  columns = sorted({m.strip("<>").replace(" ", "_") for m in re.findall(r"<image \d+>", prompt)})
  for column in columns:
    if is_missing(row.values.get(column)):
      raise RecordError(f"{row.where(column)}: the question mentions <{column.replace('_', ' ')}> but the row "
                        "has no such image")
  return images(row, *columns) if columns else ()


def string_list(row: Row, column: str) -> list[str]:
  """A list cell; strings holding a Python/JSON list (MMMU's `options`) are parsed."""
  found = value(row, column)
  if isinstance(found, str):
    try:
      found = json.loads(found)
    except json.JSONDecodeError:
      import ast
      try:
        found = ast.literal_eval(found)
      except (ValueError, SyntaxError) as e:
        raise RecordError(f"{row.where(column)}: not a list ({e})") from e
  if not isinstance(found, (list, tuple)) and not hasattr(found, "tolist"):
    raise RecordError(f"{row.where(column)}: expected a list, got {type(found).__name__}")
  return [str(x) for x in (found.tolist() if hasattr(found, "tolist") else found)]


def lettered(options: Sequence[str]) -> str:
  """"A. first\\nB. second" (the options as lmms-eval lists them)."""
  return "\n".join(f"{chr(ord('A') + i)}. {option}" for i, option in enumerate(options))


def mean_score(results: Sequence[dict], key: str = "score") -> float:
  return sum(float(r[key]) for r in results) / len(results) if results else 0.0


def breakdown(results: Sequence[dict], field: str, key: str = "score") -> dict:
  """{group value: {"score": mean, "count": n}} over the results' `meta[field]` (lists count in
  every group they name)."""
  groups = defaultdict(list)
  for r in results:
    names = r.get("meta", {}).get(field)
    for name in (names if isinstance(names, list) else [names]):
      if name is not None:
        groups[str(name)].append(float(r[key]))
  return {name: {"score": sum(v) / len(v), "count": len(v)} for name, v in sorted(groups.items())}

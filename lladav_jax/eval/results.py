"""The files of an evaluation run, written by process 0 only.

  OUT/run.json          what was evaluated (task, settings, a fingerprint of the records); a rerun with
                        other settings or data into the same OUT is refused
  OUT/predictions.jsonl one line per finished (or failed) sample, appended and flushed batch by batch
                        in completion order: the resume log
  OUT/results.jsonl     every sample in input order (written at the end, atomically)
  OUT/summary.json      metrics, breakdowns, failures, throughput; OUT/summary.md the same as tables

A run killed at any point resumes from predictions.jsonl: a torn last line is dropped, finished
samples are skipped, and the final files come out exactly as from an uninterrupted run.
"""

import json
import os
from typing import Iterable, Sequence

from lladav_jax.atomic_files import write_atomic

RUN_FILE = "run.json"
LOG_FILE = "predictions.jsonl"
RESULTS_FILE = "results.jsonl"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def dumps(entry: dict) -> str:
  return json.dumps(entry, ensure_ascii=False, sort_keys=True)


class RunMismatch(ValueError):
  """The output directory holds a run of other records or settings."""


class ResultsLog:
  """The append-only resume log of one output directory."""

  def __init__(self, output_dir: str, run: dict, overwrite: bool = False):
    os.makedirs(output_dir, exist_ok=True)
    self.dir = output_dir
    self.path = os.path.join(output_dir, LOG_FILE)
    run_path = os.path.join(output_dir, RUN_FILE)
    if overwrite:
      for name in (LOG_FILE, RESULTS_FILE, SUMMARY_JSON, SUMMARY_MD, RUN_FILE):
        if os.path.exists(os.path.join(output_dir, name)):
          os.remove(os.path.join(output_dir, name))
    if os.path.exists(run_path):
      with open(run_path, encoding="utf-8") as f:
        previous = json.load(f)
      if previous != json.loads(json.dumps(run)):
        changed = sorted(k for k in set(previous) | set(run) if previous.get(k) != json.loads(json.dumps(run)).get(k))
        raise RunMismatch(f"{output_dir} holds a run with different {', '.join(changed)}; use another output "
                         f"directory, or overwrite it (--overwrite)")
    else:
      write_atomic(run_path, json.dumps(run, indent=2, sort_keys=True) + "\n")
    self.entries = self._read()

  def _read(self) -> dict[int, dict]:
    if not os.path.exists(self.path):
      return {}
    entries, good_bytes = {}, 0
    with open(self.path, "rb") as f:
      for raw in f:
        try:
          entry = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
          break  # a line torn by a kill: it and anything after it are redone
        if not raw.endswith(b"\n"):
          break
        entries[int(entry["index"])] = entry
        good_bytes += len(raw)
    if good_bytes != os.path.getsize(self.path):
      with open(self.path, "r+b") as f:
        f.truncate(good_bytes)
    return entries

  def append(self, entries: Iterable[dict]) -> None:
    entries = list(entries)
    lines = [dumps(e) + "\n" for e in entries]
    if not lines:
      return
    with open(self.path, "a", encoding="utf-8") as f:
      f.write("".join(lines))
      f.flush()
      os.fsync(f.fileno())
    for entry in entries:
      self.entries[int(entry["index"])] = entry


def write_final(output_dir: str, samples: Sequence[dict], summary: dict) -> None:
  write_atomic(os.path.join(output_dir, RESULTS_FILE), "".join(dumps(s) + "\n" for s in samples))
  write_atomic(os.path.join(output_dir, SUMMARY_JSON), json.dumps(summary, indent=2, sort_keys=True) + "\n")
  write_atomic(os.path.join(output_dir, SUMMARY_MD), summary_markdown(summary))


def _number(value) -> str:
  if isinstance(value, float):
    return f"{value:.4f}"
  return str(value)


def summary_markdown(summary: dict) -> str:
  """Tables: the metrics, then each breakdown (group, score, count), then the failed samples."""
  lines = [f"# {summary['task']}", "",
           f"{summary['num_scored']} of {summary['num_records']} samples scored, {summary['num_failed']} failed.",
           "", "| metric | value |", "|---|---|"]
  lines += [f"| {k} | {_number(v)} |" for k, v in summary["metrics"].items()]
  for group, table in summary.get("breakdown", {}).items():
    if not table:
      continue
    lines += ["", f"| {group} | score | count |", "|---|---|---|"]
    lines += [f"| {name} | {_number(row['score'])} | {row['count']} |" for name, row in table.items()]
  if summary.get("failed"):
    lines += ["", "| failed sample | error |", "|---|---|"]
    lines += [f"| {f['id']} (#{f['index']}) | {f['error']} |" for f in summary["failed"]]
  return "\n".join(lines) + "\n"

"""The library entry point: `evaluate(model, params, tokenizer, task, records, ...) -> EvalResult`.

    from lladav_jax.eval import evaluate, get_task, load_task_records
    task = get_task("mmstar")
    records, failures = load_task_records(task, ["MMStar/val.parquet"], limit=100)
    result = evaluate(model, {"params": params}, tokenizer, task, records, failures=failures,
                      batch_size=16, output_dir="runs/mmstar")
    result.summary["metrics"], result.samples[0]["prediction"]

Records are sorted into bucketed batches, decoded greedily with the task's settings, scored and
appended to the output directory's resume log batch by batch; the final files and the summary are
written at the end (see results.py). In a multi-process run every process calls `evaluate` with the
same arguments; process 0 writes the files and gets the results, the others get an empty result.
"""

import dataclasses
import hashlib
import json
import time
from typing import Callable, Sequence

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh
from tqdm import tqdm

from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.diffusion.generation import max_total_length
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.eval import bucketing, results
from lladav_jax.eval.readers import read_rows
from lladav_jax.eval.runner import (BatchRunner, RowResult, answer_text, check_batch_size, default_mesh_and_params,
                                    task_settings)
from lladav_jax.eval.tasks.base import Record, Task, load_records
from lladav_jax.images.video import VideoSettings
from lladav_jax.models.lladav import LLaDAV

TASK_DEFAULT = "task"  # `think=TASK_DEFAULT`: the task's own think setting


@dataclasses.dataclass
class EvalResult:
  """samples: one dict per record in input order ("index", "id", "question", "target",
  "prediction", "score", ... or "error" for a failed one); summary: see `summarize`."""

  samples: list[dict]
  summary: dict


def load_task_records(task: Task, paths: Sequence[str], limit: int | None = None) -> tuple[list[Record], list[dict]]:
  """Records read from benchmark files (parquet / TSV / JSONL), and the rows that failed."""
  return load_records(task, read_rows(paths), limit)


def fingerprint(records: Sequence[Record]) -> str:
  digest = hashlib.sha256()
  for r in records:
    digest.update(json.dumps([r.index, r.id, r.question, len(r.images), r.target] + ([r.video] if r.video else []),
                             default=str).encode("utf-8"))
  return digest.hexdigest()


def summarize(task: Task, samples: Sequence[dict], settings: SamplerSettings, think,
              video_settings: VideoSettings | None = None) -> dict:
  """video_settings: reported when the records have videos."""
  scored = [s for s in samples if "error" not in s]
  failed = [{"index": s["index"], "id": s["id"], "error": s["error"]} for s in samples if "error" in s]
  out = task.summarize(scored)
  summary = {"task": task.name, "num_records": len(samples), "num_scored": len(scored), "num_failed": len(failed),
             "metrics": out["metrics"], "breakdown": out.get("breakdown", {}), "failed": failed,
             "decoding": {"gen_length": settings.gen_length, "steps": settings.steps,
                          "block_length": settings.block_length, "think": think, "cache": settings.cache,
                          "refresh": settings.refresh, "prompt_refresh": settings.prompt_refresh,
                          "transfer_ratio": settings.transfer_ratio, "threshold": settings.threshold}}
  if video_settings is not None:
    summary["video"] = dataclasses.asdict(video_settings)
  return summary


def _scored(task: Task, tokenizer: Tokenizer, row: RowResult) -> dict:
  record = row.prompt.record
  base = {"index": record.index, "id": record.id, "question": record.question}
  if row.error:
    return dict(base, error=row.error)
  prediction = answer_text(tokenizer, row.tokens)
  return dict(base, target=record.target, prediction=prediction, meta=record.meta, steps=row.steps,
              **task.score(record, prediction))


def _done_everywhere(done: set[int], count: int) -> set[int]:
  """Process 0's finished records, known to every process."""
  if jax.process_count() == 1:
    return done
  mask = np.zeros(count, bool)
  mask[[i for i in done if i < count]] = True
  mask = np.asarray(multihost_utils.broadcast_one_to_all(mask))
  return set(np.flatnonzero(mask).tolist())


def evaluate(model: LLaDAV, params, tokenizer: Tokenizer, task: Task, records: Sequence[Record], *,
             failures: Sequence[dict] = (), settings: SamplerSettings | None = None, think=TASK_DEFAULT,
             batch_size: int = 16, output_dir: str | None = None, overwrite: bool = False, mesh: Mesh | None = None,
             rules=None, seed: int = 0, system_prompt: str | None = None, min_length_bucket: int = 64,
             progress: bool = True, log: Callable[[str], None] = print,
             after_batch: Callable[[int], None] | None = None,
             video_settings: VideoSettings = VideoSettings()) -> EvalResult:
  """Evaluates `task` on `records`; see the module docstring.

  params: the model's variables ({"params": ...}). settings: the sampler settings (default: the
  task's, `task_settings`). think: "think" / "no_think" / None (default: the task's). failures: rows
  that could not become records (from `load_task_records`); they are reported, not scored.
  output_dir: resume log and final files (None: results only in memory). mesh/rules: the device mesh
  (default: every device on the batch axis) and logical axis rules. after_batch(n): called after
  each batch with the number of batches done (tests use it to interrupt a run). video_settings: how
  records with a video are read (frames, placeholders, pooling: upstream's wrapper defaults).
  """
  config = model.config
  decoding = task.decoding_for(records)
  # Checked before anything is written, so that a corrected command is not refused as another run.
  settings = (settings or task_settings(decoding, tokenizer, config.tokens.eot)).resolve(config)
  think = decoding.think if think == TASK_DEFAULT else think
  mesh, params = default_mesh_and_params(model, params, mesh)
  check_batch_size(mesh, rules, batch_size)
  lead = jax.process_index() == 0
  indices = [r.index for r in records] + [int(f["index"]) for f in failures]
  if len(set(indices)) != len(indices):
    raise ValueError("records and failures must have distinct indices")

  videos = video_settings if any(r.video is not None for r in records) else None
  store, memory = None, {}
  if output_dir is not None and lead:
    run = {"task": task.name, "records": len(records), "failures": len(failures), "fingerprint": fingerprint(records),
           "settings": repr(settings), "think": think, "seed": seed, "system_prompt": system_prompt}
    if videos is not None:
      run["video"] = repr(videos)
    store = results.ResultsLog(output_dir, run, overwrite=overwrite)
    memory = store.entries
  done = _done_everywhere(set(memory), max(indices, default=-1) + 1)
  if done and lead and log is not None:
    log(f"resuming {output_dir}: {len(done)} of {len(indices)} samples done")

  def record_entries(entries):
    if store is not None:
      store.append(entries)
    elif lead:
      memory.update((e["index"], e) for e in entries)

  record_entries([f for f in failures if int(f["index"]) not in done])
  limit = max_total_length(model) - settings.gen_length - len(settings.suffix)
  prompts, early = [], []
  for record in (r for r in records if r.index not in done):
    try:
      prompt = bucketing.probe(record, tokenizer, config, think, system_prompt, video_settings)
    except (OSError, ValueError) as e:  # unreadable image / video headers, bad placeholders
      early.append({"index": record.index, "id": record.id, "question": record.question,
                    "error": f"{type(e).__name__}: {e}"})
      continue
    if prompt.length > limit:
      early.append({"index": record.index, "id": record.id, "question": record.question,
                    "error": f"prompt of {prompt.length} tokens + gen_length {settings.gen_length} exceeds the "
                             f"maximum length {limit + settings.gen_length}"})
      continue
    prompts.append(prompt)
  record_entries(early)

  batches = bucketing.bucket_batches(prompts, batch_size, min_length_bucket)
  runner = BatchRunner(model, params, settings, mesh, rules, batch_size, seed, video_settings)
  bar = tqdm(total=len(prompts), unit="sample", disable=not (progress and lead), desc=task.name, smoothing=0.1)
  start = time.perf_counter()
  for n, batch in enumerate(batches, start=1):
    rows = runner.run(batch)
    if lead:
      record_entries([_scored(task, tokenizer, row) for row in rows])
    bar.update(len(batch.prompts))
    if after_batch is not None:
      after_batch(n)
  bar.close()
  seconds = time.perf_counter() - start
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices("lladav_jax.eval: all batches decoded")
  if not lead:
    return EvalResult([], {})

  samples = [memory[i] for i in sorted(memory)]
  summary = summarize(task, samples, settings, think, videos)
  final = dict(summary, throughput={"decoded_this_run": len(prompts), "seconds": round(seconds, 3),
                                    "samples_per_second": round(len(prompts) / seconds, 3) if seconds else None})
  if output_dir is not None:
    results.write_final(output_dir, samples, final)
  if log is not None:
    log(results.summary_markdown(summary))
  return EvalResult(samples, final)

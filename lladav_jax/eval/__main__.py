"""Evaluate LLaDA-V on a benchmark: `python -m lladav_jax.eval --checkpoint DIR --task NAME --data PATH`.

Reads the benchmark files you downloaded (parquet from the lmms-eval datasets, TSV, or a generic
JSONL with --task jsonl), decodes every question with the task's LLaDA-V settings in jitted
batches, and writes OUT/results.jsonl, OUT/summary.{json,md}. An interrupted run continues where
it stopped when started again with the same arguments. Multi-host: run the same command on every
host with --coordinator-address/--num-processes/--process-id (or --distributed-auto).
"""

import argparse
import dataclasses
import os
import sys
from typing import Sequence

from lladav_jax.diffusion.cli_flags import add_decoding_flags
from lladav_jax.eval.tasks import TASKS, Decoding, get_task

_THINK = {"think": "think", "no_think": "no_think", "none": None}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m lladav_jax.eval", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="converted checkpoint or LLaDA-V Hugging Face directory")
  p.add_argument("--task", required=True, choices=sorted(TASKS), help="benchmark (jsonl: the generic format)")
  p.add_argument("--data", required=True, action="append",
                 help="benchmark file, glob or directory of .parquet/.tsv/.jsonl files (repeatable)")
  p.add_argument("--output", help="output directory (default: eval_results/<task>)")
  p.add_argument("--overwrite", action="store_true", help="start over instead of resuming OUT")
  p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint's)")
  p.add_argument("--batch-size", type=int, default=16, help="global batch size (rows per decode)")
  p.add_argument("--limit", type=int, help="evaluate only the first N rows")
  g = p.add_argument_group("decoding (default: the task's LLaDA-V settings)")
  g.add_argument("--gen-length", type=int)
  g.add_argument("--steps", type=int)
  g.add_argument("--block-length", type=int)
  g.add_argument("--stop", action="append", help="stop string before <|eot_id|> (replaces the task's)")
  g.add_argument("--think", choices=sorted(_THINK), help="stage-3 tag appended to questions with images")
  g.add_argument("--stop-order", choices=["upstream", "earliest"], default="upstream",
                 help="upstream: LLaDA-V's list-order stop scan (parity); earliest: the first stop found")
  add_decoding_flags(g)
  g.add_argument("--seed", type=int, default=0)
  g.add_argument("--system-prompt", help="replace upstream's default system prompt")
  r = p.add_argument_group("devices and processes")
  r.add_argument("--dtype", choices=["float32", "bfloat16"],
                 help="compute dtype (default: float32 on CPU, bfloat16 elsewhere)")
  r.add_argument("--mesh", default="data=-1", help="mesh axis sizes, e.g. data=-1 or data=2,fsdp=4")
  r.add_argument("--min-length-bucket", type=int, default=64, help="smallest prompt-length bucket")
  r.add_argument("--coordinator-address", default="", help="host:port of process 0 (multi-process runs)")
  r.add_argument("--num-processes", type=int, default=0)
  r.add_argument("--process-id", type=int, default=-1)
  r.add_argument("--distributed-auto", action="store_true", help="let JAX detect the cluster")
  r.add_argument("--no-progress", action="store_true", help="no progress bar")
  return p.parse_args(argv)


def parse_mesh(text: str) -> dict[str, int]:
  sizes = {}
  for part in text.split(","):
    name, _, size = part.partition("=")
    try:
      sizes[name.strip()] = int(size)
    except ValueError:
      raise SystemExit(f"--mesh {text!r}: expected axis=size pairs like data=-1 or data=2,fsdp=4") from None
  return sizes


def decoding_of(args, task, records) -> Decoding:
  base = task.decoding_for(records)
  changes = {k: v for k, v in (("gen_length", args.gen_length), ("steps", args.steps),
                               ("block_length", args.block_length)) if v is not None}
  if args.stop is not None:
    changes["stops"] = tuple(args.stop)
  if args.think is not None:
    changes["think"] = _THINK[args.think]
  if "gen_length" in changes and "block_length" not in changes:
    changes["block_length"] = changes["gen_length"]
  return dataclasses.replace(base, **changes)


def main(argv: Sequence[str] | None = None) -> dict:
  args = parse_args(argv)
  from lladav_jax.train import multihost  # jax.distributed must start before anything touches devices
  multihost.initialize(args.coordinator_address, args.num_processes, args.process_id, auto=args.distributed_auto)

  import jax
  from lladav_jax import load_pretrained, sharding
  from lladav_jax.eval.evaluation import evaluate, load_task_records
  from lladav_jax.eval.readers import DataError
  from lladav_jax.eval.results import RunMismatch
  from lladav_jax.eval.runner import task_settings
  from lladav_jax.generate import find_tokenizer
  from lladav_jax.model_config import ComputeConfig
  from lladav_jax.models.lladav import LLaDAV

  task = get_task(args.task)
  try:
    records, failures = load_task_records(task, args.data, args.limit)
  except DataError as e:
    raise SystemExit(f"error: {e}") from None
  if not records and not failures:
    raise SystemExit(f"error: no records in {args.data}")
  mesh = sharding.create_mesh(parse_mesh(args.mesh))
  rules = sharding.DEFAULT_LOGICAL_AXIS_RULES
  dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
  config, params = load_pretrained(args.checkpoint, mesh=mesh, rules=rules, dtype=dtype)
  tokenizer = find_tokenizer(args.checkpoint, args.tokenizer)
  tokenizer.check_token_ids(config.tokens)
  model = LLaDAV(config, ComputeConfig(dtype=dtype, param_dtype=dtype, scan_layers=True))
  decoding = decoding_of(args, task, records)
  settings = task_settings(decoding, tokenizer, config.tokens.eot, stop_order=args.stop_order,
                           temperature=args.temperature, cfg_scale=args.cfg, remasking=args.remasking,
                           cache=args.cache, refresh=args.refresh, threshold=args.threshold, factor=args.factor)
  output = args.output or os.path.join("eval_results", task.name)
  if jax.process_index() == 0:
    print(f"{task.name}: {len(records)} records from {', '.join(args.data)}"
          + (f" ({len(failures)} unusable rows)" if failures else "") + f"; results in {output}", file=sys.stderr)
  try:
    result = evaluate(model, {"params": params}, tokenizer, task, records, failures=failures, settings=settings,
                      think=decoding.think, batch_size=args.batch_size, output_dir=output,
                      overwrite=args.overwrite, mesh=mesh, rules=rules, seed=args.seed,
                      system_prompt=args.system_prompt, min_length_bucket=args.min_length_bucket,
                      progress=not args.no_progress)
  except RunMismatch as e:
    raise SystemExit(f"error: {e}") from None
  return result.summary


def cli() -> None:
  """The `lladav-eval` console script (whose return value would become the exit status)."""
  main()


if __name__ == "__main__":
  cli()

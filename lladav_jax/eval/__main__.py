"""Evaluate LLaDA-V on a benchmark: `python -m lladav_jax.eval --checkpoint DIR --task NAME --data PATH`.

Reads the benchmark files you downloaded (parquet from the lmms-eval datasets, TSV, MLVU's JSON, or
a generic JSONL with --task jsonl; video tasks also their video files), decodes every question with
the task's LLaDA-V settings in jitted
batches, and writes OUT/results.jsonl, OUT/summary.{json,md}. An interrupted run continues where
it stopped when started again with the same arguments. Multi-host: run the same command on every
host with --coordinator-address/--num-processes/--process-id (or --distributed).
"""

import argparse
import os
import sys
from typing import Sequence

from lladav_jax import cli
from lladav_jax.eval.tasks import TASKS, get_task


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = cli.ArgumentParser(prog="python -m lladav_jax.eval", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="converted checkpoint or LLaDA-V Hugging Face directory")
  p.add_argument("--task", required=True, choices=sorted(TASKS), help="benchmark (jsonl: the generic format)")
  p.add_argument("--data", required=True, action="append",
                 help="benchmark file, glob or directory of .parquet/.tsv/.jsonl/.json files (repeatable)")
  p.add_argument("--output", help="output directory (default: eval_results/<task>)")
  p.add_argument("--overwrite", action="store_true", help="start over instead of resuming OUT")
  p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint's)")
  p.add_argument("--adapter", help="a LoRA run's adapters directory (WORKDIR/adapters), applied over the checkpoint")
  p.add_argument("--batch-size", type=int, default=16, help="global batch size (rows per decode)")
  p.add_argument("--limit", type=int, help="evaluate only the first N rows")
  cli.add_decoding_flags(p.add_argument_group("decoding"), defaults="the task's LLaDA-V setting")
  v = p.add_argument_group("videos")
  v.add_argument("--video-folder", help="where the video task's files are (default: beside the data files, as the "
                 "benchmark is released)")
  cli.add_video_flags(v)
  r = p.add_argument_group("devices and processes")
  r.add_argument("--mesh", default="data=-1", help="mesh axis sizes, e.g. data=-1 or data=2,fsdp=4")
  r.add_argument("--min-length-bucket", type=int, default=64, help="smallest prompt-length bucket")
  cli.add_distributed_flags(r)
  r.add_argument("--no-progress", action="store_true", help="no progress bar")
  args = p.parse_args(argv)
  for flag in ("batch_size", "limit", "min_length_bucket"):
    value = getattr(args, flag)
    if value is not None and value < 1:
      p.error(f"--{flag.replace('_', '-')} must be >= 1, got {value}")
  return args


def main(argv: Sequence[str] | None = None) -> dict:
  args = parse_args(argv)
  cli.set_platform_flags()
  cli.start_distributed(args.coordinator_address, args.num_processes, args.process_id, auto=args.distributed)

  from lladav_jax.checkpoints.pretrained import CheckpointError
  from lladav_jax.convert.problems import ConversionError
  from lladav_jax.data.tokenizer import TokenizerError
  from lladav_jax.diffusion.settings import SettingsError
  from lladav_jax.eval.readers import DataError
  from lladav_jax.eval.results import RunMismatch
  try:
    return run(args)
  except (CheckpointError, ConversionError, TokenizerError, SettingsError, DataError, RunMismatch) as e:
    cli.fail(e)


def run(args: argparse.Namespace) -> dict:
  """Everything a flag names is checked before the weights are read or anything is written."""
  import jax
  from lladav_jax import sharding
  from lladav_jax.checkpoints.adapters import check_adapters, load_adapters
  from lladav_jax.checkpoints.pretrained import load_config, load_pretrained
  from lladav_jax.eval.evaluation import evaluate, load_task_records
  from lladav_jax.eval.readers import DataError
  from lladav_jax.eval.runner import check_batch_size
  from lladav_jax.models import LLaDAV
  from lladav_jax.models.compute import inference_compute

  try:
    task = get_task(args.task, video_folder=args.video_folder)
  except ValueError as e:
    cli.fail(f"--video-folder: {e}")
  try:
    video_settings = cli.video_settings(args)
  except ValueError as e:
    cli.fail(f"--max-frames: {e}")
  records, failures = load_task_records(task, args.data, args.limit)
  if not records and not failures:
    raise DataError(f"no records in {', '.join(args.data)}")
  try:
    mesh = sharding.create_mesh(cli.parse_mesh(args.mesh))
  except ValueError as e:
    cli.fail(f"--mesh: {e}")
  rules = sharding.DEFAULT_LOGICAL_AXIS_RULES
  try:
    check_batch_size(mesh, rules, args.batch_size)
  except ValueError as e:
    cli.fail(f"--batch-size: {e}")
  config = load_config(args.checkpoint)
  tokenizer = cli.find_tokenizer(args.checkpoint, args.tokenizer)
  tokenizer.check_token_ids(config.tokens)
  decoding = task.decoding_for(records)
  settings = cli.sampler_settings(args, tokenizer, config.tokens.eot, gen_length=decoding.gen_length,
                                  steps=decoding.steps, block_length=decoding.block_length,
                                  stops=decoding.stops).resolve(config)
  think = cli.think_mode(args, decoding.think)
  output = args.output or os.path.join("eval_results", task.name)
  dtype = cli.default_dtype(args.dtype)
  compute = inference_compute(dtype)
  lora = check_adapters(args.adapter, config, compute) if args.adapter else None
  _, params = load_pretrained(args.checkpoint, mesh=mesh, rules=rules, dtype=dtype)
  if lora is not None:
    compute, params = load_adapters(args.adapter, lora, compute, params)
  model = LLaDAV(config, compute)
  if jax.process_index() == 0:
    print(f"{task.name}: {len(records)} records from {', '.join(args.data)}"
          + (f" ({len(failures)} unusable rows)" if failures else "") + f"; results in {output}", file=sys.stderr)
  result = evaluate(model, {"params": params}, tokenizer, task, records, failures=failures, settings=settings,
                    think=think, batch_size=args.batch_size, output_dir=output,
                    overwrite=args.overwrite, mesh=mesh, rules=rules, seed=args.seed,
                    system_prompt=args.system_prompt, min_length_bucket=args.min_length_bucket,
                    progress=not args.no_progress, video_settings=video_settings)
  return result.summary


def entry_point() -> None:
  """The `lladav-eval` console script (whose return value would become the exit status)."""
  main()


if __name__ == "__main__":
  entry_point()

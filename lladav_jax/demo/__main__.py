"""`python -m lladav_jax.demo`: train a tiny LLaDA-V on synthetic shapes, then ask it questions.

Runs the whole system on a CPU in minutes: data made with PIL, a tokenizer trained on it, stage 1
(captions) and stage 2 (questions) through the real training loop (grain pipeline, jitted step,
orbax checkpoints), held-out accuracy per question type with the batched jitted sampler, and one
trace of the unmasking order. Re-running reuses what is done: data, tokenizer and finished stages
are kept, an interrupted stage resumes from its checkpoint.
"""

import argparse
import json
import logging
import pathlib
import shlex
import time

from lladav_jax import cli, generate
from lladav_jax.demo import pipeline


def parse_args(argv=None) -> argparse.Namespace:
  p = cli.ArgumentParser(prog="python -m lladav_jax.demo", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="workdir/demo", help="where data, tokenizer, runs and results go")
  p.add_argument("--fresh", action="store_true", help="delete the workdir first")
  p.add_argument("--config-dir", type=pathlib.Path, default=pipeline.CONFIG_DIR,
                 help="where demo_stage1.py and demo_stage2.py are (default: the checkout's configs/)")
  return p.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  cli.set_platform_flags()
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger("lladav_jax").setLevel(logging.INFO)
  start = time.monotonic()
  work = pathlib.Path(args.workdir).absolute()
  if args.fresh and work.exists():
    import shutil
    shutil.rmtree(work)
  demo = pipeline.DemoWorkdir(work, config_dir=args.config_dir)

  print(f"== 1. data: synthetic shapes in {demo.data_dir}")
  counts = pipeline.make_data(demo)
  print("   " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()))
  print(f"== 2. tokenizer: byte-level BPE with the LLaDA special tokens in {demo.tokenizer_dir}")
  print(f"   {pipeline.make_tokenizer(demo)} entries")
  for stage in (1, 2):
    what = "captions" if stage == 1 else "one question per image"
    print(f"== {2 + stage}. stage {stage}: {what} -> {demo.stage_dir(stage)}")
    pipeline.train_stage(demo, stage)

  print("== 5. held-out questions, decoded in batches by the jitted sampler")
  predictions = pipeline.evaluate_heldout(demo)
  baseline = pipeline.blind_baseline(demo, predictions)
  table = pipeline.accuracy_table(predictions, baseline)
  for line in table:
    print("   " + line)
  print("   examples:")
  for p in predictions[:6]:
    mark = "ok " if p.correct else "bad"
    print(f"   [{mark}] {p.question:38s} -> {p.predicted!r} (answer {p.answer!r})")
  (work / "results.json").write_text(json.dumps(
      {"accuracy": pipeline.accuracy_json(predictions), "without_image": baseline,
       "predictions": [p.__dict__ for p in predictions]}, indent=1))

  print("== 6. how one answer was unmasked (--trace)")
  example = predictions[0]
  image = demo.data_dir / pipeline.record_image(demo, example.record_id)
  # The generate command line on one held-out question, with --trace and an HTML picture.
  generate.main(pipeline.generate_args(demo, image, example.question) + ["--trace-file", str(work / "trace.html")])

  print(f"== done in {time.monotonic() - start:.0f} s. Loss curves: {demo.stage_dir(1)}/loss.png, "
        f"{demo.stage_dir(2)}/loss.png; results: {work / 'results.json'}")
  print("Ask the trained model about your own image (shapes on a light background work best):")
  args = pipeline.generate_args(demo, "my.png", "What color is the circle?")
  print("   .venv/bin/python -m lladav_jax.generate " + shlex.join(args))


if __name__ == "__main__":
  main()

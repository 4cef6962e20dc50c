"""`python -m lladav_jax.demo`: train a tiny LLaDA-V on synthetic shapes, then ask it questions.

Runs the whole system on a CPU in minutes: data made with PIL, a tokenizer trained on it, stage 1
(captions) and stage 2 (questions) through the real training loop (grain pipeline, jitted step,
orbax checkpoints), held-out accuracy per question type with the batched jitted sampler, and one
trace of the unmasking order. Re-running reuses what is done: data, tokenizer and finished stages
are kept, an interrupted stage resumes from its checkpoint.
"""

import os

# The train CLI's CPU scheduler setting (see lladav_jax/train/__main__.py); set before jax starts.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_cpu_enable_concurrency_optimized_scheduler=false").strip()

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import pathlib  # noqa: E402
import shlex  # noqa: E402
import time  # noqa: E402

from lladav_jax.demo import pipeline  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m lladav_jax.demo", description=__doc__.split("\n")[0])
  p.add_argument("--workdir", default="workdir/demo", help="where data, tokenizer, runs and results go")
  p.add_argument("--fresh", action="store_true", help="delete the workdir first")
  return p.parse_args(argv)


def main(argv=None) -> None:
  args = parse_args(argv)
  logging.basicConfig(level=logging.WARNING)
  logging.getLogger("lladav_jax").setLevel(logging.INFO)
  start = time.monotonic()
  work = pathlib.Path(args.workdir).absolute()
  if args.fresh and work.exists():
    import shutil
    shutil.rmtree(work)
  plan = pipeline.DemoPlan(work)

  print(f"== 1. data: synthetic shapes in {plan.data_dir}")
  counts = pipeline.make_data(plan)
  print("   " + ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in counts.items()))
  print(f"== 2. tokenizer: byte-level BPE with the LLaDA special tokens in {plan.tokenizer_dir}")
  print(f"   {pipeline.make_tokenizer(plan)} entries")
  for stage in (1, 2):
    what = "captions" if stage == 1 else "one question per image"
    print(f"== {2 + stage}. stage {stage}: {what} -> {plan.stage_dir(stage)}")
    pipeline.train_stage(plan, stage)

  print("== 5. held-out questions, decoded in batches by the jitted sampler")
  predictions = pipeline.evaluate_heldout(plan)
  baseline = pipeline.blind_baseline(plan, predictions)
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
  image = plan.data_dir / pipeline.record_image(plan, example.record_id)
  pipeline.show_trace(plan, image, example.question)

  print(f"== done in {time.monotonic() - start:.0f} s. Loss curves: {plan.stage_dir(1)}/loss.png, "
        f"{plan.stage_dir(2)}/loss.png; results: {work / 'results.json'}")
  print("Ask the trained model about your own image (shapes on a light background work best):")
  args = pipeline.generate_args(plan, "my.png", "What color is the circle?")
  print("   .venv/bin/python -m lladav_jax.generate " + shlex.join(args))


if __name__ == "__main__":
  main()

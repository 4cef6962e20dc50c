"""Accuracy against speed of the sampler's shortcuts on a trained model: the demo model (`make demo`
trains it; this benchmark says so and stops when --demo-workdir has none) decoded exactly, with the
prefix and dual KV caches at several refresh intervals, Fast-dLLM's threshold and factor rules and
dLLM-Cache, on two tasks:
  answers   the held-out questions, by the final (stage-2) model: one word each, gen_length 4, the
            demo's setting;
  captions  held-out scenes drawn like the training captions', by the stage-1 model (trained on
            captions; stage 2 trains on questions only): longer, gen_length 32 in blocks of 8.
Printed per setting: held-out accuracy (exact match), the share of answer tokens equal to the exact
decode's, position by position, tokens/s (gen_length per row over the wall time of the whole set,
compiled beforehand), that speed over the exact decode's measured in this run, and model
evaluations per row. The paper's anchor (LLaDA-V, MathVista): refresh 2 -> 48 trades 59.1% -> 56.8%
for 10.6 -> 35.5 tokens/s.
Usage: python bench/decode_accuracy.py [--demo-workdir workdir/demo --questions 300 --captions 100]
"""

import argparse
import dataclasses
import json
import os
import pathlib
import random
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402

from bench.precision import agreement  # noqa: E402
from lladav_jax.checkpoints.pretrained import load_pretrained  # noqa: E402
from lladav_jax.data.prompts import build_prompt  # noqa: E402
from lladav_jax.data.tokenizer import Tokenizer  # noqa: E402
from lladav_jax.demo import shapes  # noqa: E402
from lladav_jax.demo.evaluate import GEN_LENGTH, is_match  # noqa: E402
from lladav_jax.demo.pipeline import DemoWorkdir  # noqa: E402
from lladav_jax.diffusion.generation import generate  # noqa: E402
from lladav_jax.diffusion.settings import SamplerSettings  # noqa: E402
from lladav_jax.images import load_image  # noqa: E402
from lladav_jax.images.crops import inference_visuals  # noqa: E402
from lladav_jax.models import LLaDAV  # noqa: E402
from lladav_jax.models.compute import inference_compute  # noqa: E402
from lladav_jax.samples import build_sample  # noqa: E402

CAPTION_LENGTH, CAPTION_BLOCK = 32, 8
BATCH = 64


def variants(exact: SamplerSettings) -> list[tuple[str, SamplerSettings]]:
  """Exact, then the shortcuts; refresh intervals longer than a block's steps are left out."""
  steps = exact.steps_per_block
  out = [("exact", exact)]
  for mode in ("prefix", "dual"):
    out += [(f"{mode} r={r}", dataclasses.replace(exact, cache=mode, refresh=r)) for r in (2, 4) if r < steps]
    out.append((f"{mode}, block starts", dataclasses.replace(exact, cache=mode)))
  out += [("dLLM-Cache 25/7/0.25 (upstream demo)", dataclasses.replace(exact, cache="dllm")),
          ("dLLM-Cache 8/2/0.25", dataclasses.replace(exact, cache="dllm", prompt_refresh=8, refresh=2)),
          ("threshold 0.9", dataclasses.replace(exact, threshold=0.9)),
          ("threshold 0.7", dataclasses.replace(exact, threshold=0.7)),
          ("factor 1.0", dataclasses.replace(exact, factor=1.0)),
          ("threshold 0.9 + dual", dataclasses.replace(exact, threshold=0.9, cache="dual"))]
  return out


def question_set(work: DemoWorkdir, tokenizer, config, limit: int):
  records = json.loads((work.data_dir / "vqa_val.json").read_text())[:limit]
  samples, answers = [], []
  for record in records:
    question = record["conversations"][0]["value"].replace("<image>", "").strip()
    image = load_image(str(work.data_dir / record["image"]))
    ids = build_prompt(tokenizer, question, 1, system_prompt=work.system_prompt, keep_image_newline=True)
    samples.append(build_sample(ids, inference_visuals([image], config), config))
    answers.append(record["conversations"][1]["value"])
  return samples, answers


def caption_set(work: DemoWorkdir, tokenizer, config, count: int):
  """Scenes the training never saw (another seed), prompted as the captions were trained: `<image>` alone."""
  rng = random.Random(12345)
  samples, answers = [], []
  for _ in range(count):
    items = shapes.random_scene(rng, work.image_size)
    ids = build_prompt(tokenizer, "<image>", 1, system_prompt=work.system_prompt, keep_image_newline=True)
    samples.append(build_sample(ids, inference_visuals([shapes.draw(items, work.image_size)], config), config))
    answers.append(shapes.caption(items))
  return samples, answers


def run(model, params, tokenizer, samples, settings):
  """(decoded texts, token ids, seconds, model evaluations per row), compiled before it is timed."""
  generate(model, params, samples[:BATCH], settings, batch_size=BATCH)
  start = time.perf_counter()
  ids, trace = generate(model, params, samples, settings, batch_size=BATCH)
  seconds = time.perf_counter() - start
  texts = [tokenizer.decode([int(t) for t in a], skip_special_tokens=True) for a in ids]
  return texts, [list(a) for a in ids], seconds, float(np.mean(trace.num_steps))


def table(name, model, params, tokenizer, samples, answers, exact: SamplerSettings) -> None:
  print(f"\n{name}: {len(samples)} held-out, gen_length {exact.gen_length}, steps {exact.steps}, "
        f"block_length {exact.block_length}")
  print(f"  {'setting':38s} {'accuracy':>8s} {'tokens = exact':>14s} {'tokens/s':>9s} {'speed-up':>8s} "
        f"{'evaluations':>11s}")
  reference, base = None, None
  for label, settings in variants(exact):
    texts, ids, seconds, steps = run(model, params, tokenizer, samples, settings)
    accuracy = np.mean([is_match(t, a) for t, a in zip(texts, answers)])
    reference = ids if reference is None else reference
    _, same = agreement(reference, ids)
    speed = len(samples) * exact.gen_length / seconds
    base = speed if base is None else base
    print(f"  {label:38s} {accuracy:8.1%} {same:14.1%} {speed:9.1f} {speed / base:7.2f}x {steps:11.1f}")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--demo-workdir", default="workdir/demo")
  parser.add_argument("--questions", type=int, default=300)
  parser.add_argument("--captions", type=int, default=128)
  args = parser.parse_args()
  work = DemoWorkdir(pathlib.Path(args.demo_workdir))
  if not work.stage_dir(2).exists():
    print(f"{args.demo_workdir}: no trained demo model (run `make demo` first)", file=sys.stderr)
    sys.exit(1)
  tokenizer = Tokenizer.from_dir(str(work.tokenizer_dir))
  tasks = [("answers", 2, question_set, args.questions, GEN_LENGTH, GEN_LENGTH),
           ("captions", 1, caption_set, args.captions, CAPTION_LENGTH, CAPTION_BLOCK)]
  for name, stage, make_set, count, gen_length, block_length in tasks:
    config, params = load_pretrained(str(work.stage_dir(stage)), dtype="float32")
    model = LLaDAV(config, inference_compute("float32"))
    if name == "answers":
      print(f"demo model ({args.demo_workdir}): text hidden {config.text.hidden_size}, layers "
            f"{config.text.num_hidden_layers}; greedy, float32 on {jax.default_backend()} "
            f"({os.cpu_count()} cores), batches of {BATCH}")
    samples, answers = make_set(work, tokenizer, config, count)
    exact = SamplerSettings(gen_length=gen_length, steps=gen_length, block_length=block_length,
                            stop_sequences=((config.tokens.eot,),), vocab_limit=len(tokenizer))
    table(f"{name} (stage {stage} model)", model, {"params": params}, tokenizer, samples, answers, exact)


if __name__ == "__main__":
  main()

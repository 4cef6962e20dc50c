"""Evaluation throughput: samples/s of `lladav_jax.eval.evaluate` at batch size 1 and 16, for the
multiple-choice setting (2 tokens, 2 steps) and a short-answer setting (32 tokens, 16 steps) decoded
exactly, with the dual KV cache, with threshold decoding, and with both. Printed as ratios measured
side by side in this run.

The model is CPU-sized with the real image geometry (384 px crops, 729 tokens each): each question
has one 384x384 or 512x384 image (2 or 3 crops, about 1500-2100 tokens). Every configuration runs
once to compile and is then timed on a second run over the same questions (the whole evaluation:
image decoding, crops, prompts, decoding, scoring).
Usage: python bench/eval.py [--questions 16 --hidden 128 --layers 2 --batch-sizes 1,16]
"""

import argparse
import dataclasses
import io
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.sampler import random_params  # noqa: E402
from lladav_jax.data.tokenizer import Tokenizer  # noqa: E402
from lladav_jax.demo import tokenizer as demo_tokenizer  # noqa: E402
from lladav_jax.eval import evaluate, get_task, task_settings  # noqa: E402
from lladav_jax.eval.tasks.base import MULTIPLE_CHOICE, Record  # noqa: E402
from lladav_jax.eval.tasks.jsonl import SHORT_ANSWER  # noqa: E402
from lladav_jax.images.crops import sample_visuals  # noqa: E402
from lladav_jax.models import LLaDAConfig, LLaDAV, LLaDAVConfig, ProjectorConfig, SiglipConfig  # noqa: E402
from lladav_jax.models.compute import inference_compute  # noqa: E402
from lladav_jax.samples import build_sample  # noqa: E402
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID  # noqa: E402

QUESTION = "What is shown in the picture? Pick the best option."
OPTIONS = ["a red circle", "a green square", "a blue triangle", "nothing at all"]


def build(args):
  folder = tempfile.mkdtemp()
  demo_tokenizer.save(folder, [QUESTION] + OPTIONS, vocab_size=400)
  tokenizer = Tokenizer.from_dir(folder)
  text = LLaDAConfig(vocab_size=512, hidden_size=args.hidden, intermediate_size=2 * args.hidden,
                     num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=4)
  vision = SiglipConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
  config = LLaDAVConfig(text=text, vision=vision,
                        projector=ProjectorConfig("mlp2x_gelu", vision.hidden_size, text.hidden_size),
                        vision_select_layer=-1, max_length=8192, tokens=demo_tokenizer.TOKEN_IDS)
  model = LLaDAV(config, inference_compute("float32"))
  image = sample_visuals([Image.new("RGB", (384, 384))], config)
  params = random_params(model, build_sample([0, IMAGE_PLACEHOLDER_ID, 1], image, config))  # {"params": ...}
  return model, params, tokenizer


def questions(count: int) -> list[Record]:
  rng = np.random.default_rng(0)
  out = []
  for i in range(count):
    pixels = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    size = (384, 384) if i % 3 else (512, 384)
    buffer = io.BytesIO()
    Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR).save(buffer, format="PNG")
    options = {chr(ord("A") + k): o for k, o in enumerate(OPTIONS)}
    question = QUESTION + "\n" + "\n".join(f"{k}. {v}" for k, v in options.items())
    out.append(Record(i, f"q{i}", question, (buffer.getvalue(),), ["B"],
                      {"metric": "choice", "options": options, "category": None}))
  return out


def samples_per_second(model, params, tokenizer, records, settings, batch_size) -> tuple[float, float]:
  """(samples/s of the timed run, model evaluations per row)."""
  task = get_task("jsonl")
  kwargs = dict(settings=settings, batch_size=batch_size, progress=False, log=None)
  evaluate(model, params, tokenizer, task, records, **kwargs)  # compile every shape
  start = time.perf_counter()
  result = evaluate(model, params, tokenizer, task, records, **kwargs)
  seconds = time.perf_counter() - start
  return len(records) / seconds, float(np.mean([s["steps"] for s in result.samples]))


def main() -> None:
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--questions", type=int, default=16)
  p.add_argument("--hidden", type=int, default=128)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--batch-sizes", default="1,16")
  args = p.parse_args()
  model, params, tokenizer = build(args)
  records = questions(args.questions)
  eot = model.config.tokens.eot
  sizes = [int(b) for b in args.batch_sizes.split(",")]
  configs = [("multiple choice (2 tokens, 2 steps)", task_settings(MULTIPLE_CHOICE, tokenizer, eot))]
  short = task_settings(SHORT_ANSWER, tokenizer, eot)
  configs += [("short answer (32 tokens, 16 steps), exact", short),
              ("short answer, dual cache", dataclasses.replace(short, cache="dual")),
              ("short answer, threshold 0.9", dataclasses.replace(short, threshold=0.9)),
              ("short answer, threshold 0.9 + dual cache", dataclasses.replace(short, threshold=0.9, cache="dual"))]
  print(f"model: text hidden {args.hidden}, layers {args.layers}, vocab 512; {args.questions} questions, one "
        f"384x384 or 512x384 image each (2-3 crops x 729 tokens); greedy; float32 on {jax.default_backend()} "
        f"({os.cpu_count()} cores)\n")
  baseline = {}
  for name, settings in configs:
    print(name)
    for b in sizes:
      rate, steps = samples_per_second(model, params, tokenizer, records, settings, b)
      first = baseline.setdefault(name, rate)
      exact = baseline.setdefault("exact", rate) if "exact" in name else baseline.get("exact")
      vs_exact = f"   {rate / exact:5.2f}x exact batch 1" if exact and "short" in name else ""
      print(f"  batch {b:3d}: {rate:8.3f} samples/s   {rate / first:5.2f}x batch {sizes[0]}{vs_exact}   "
            f"(model evaluations per row: {steps:.1f})")


if __name__ == "__main__":
  main()

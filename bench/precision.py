"""How often greedy decodes in bfloat16 and float16 agree with float32 (weights and activations in
that dtype, float32 logits from the LM head in all three, as on an accelerator).

Two kinds of model, each decoded three times over the same prompts:
  * random CPU-sized LLaDA-V models with the real image geometry (384 px crops, 729 tokens each) and
    LM heads of growing scale, from unsure to confident predictions (a trained model's are
    confident);
  * the trained demo model (`make demo` writes it; skipped when --demo-workdir has none), on its
    held-out questions.
Printed per dtype: rows whose answer is identical to float32's, and the share of answer tokens that
agree position by position.
Usage: python bench/precision.py [--prompts 8 --gen-length 32 --head-scales 1.3,4,12 --demo-workdir workdir/demo]
"""

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.sampler import SCALES, add_model_flags, build_model, prompts, random_params  # noqa: E402
from bench.upstream_generate import prompt_embeddings, torch_language_model  # noqa: E402
from lladav_jax.demo.pipeline import DemoWorkdir, evaluate_heldout  # noqa: E402
from lladav_jax.diffusion.generation import generate  # noqa: E402
from lladav_jax.diffusion.settings import SamplerSettings  # noqa: E402
from lladav_jax.models import LLaDAV  # noqa: E402
from lladav_jax.models.compute import inference_compute  # noqa: E402

LOW_PRECISION = ("bfloat16", "float16")


def agreement(reference: list, other: list) -> tuple[int, float]:
  """(rows identical to the reference, share of reference positions holding the same token)."""
  same_rows = sum(np.array_equal(a, b) for a, b in zip(reference, other))
  matched = total = 0
  for a, b in zip(reference, other):
    n = min(len(a), len(b))
    matched += int(np.sum(np.asarray(a[:n]) == np.asarray(b[:n])))
    total += max(len(a), len(b))
  return same_rows, matched / max(total, 1)


def in_dtype(model: LLaDAV, params, dtype: str):
  cast = LLaDAV(model.config, inference_compute(dtype))
  return cast, jax.tree_util.tree_map(lambda x: x.astype(dtype), params)


def report(name: str, reference: list, decodes: dict[str, list]) -> None:
  cells = []
  for dtype, answers in decodes.items():
    rows, tokens = agreement(reference, answers)
    cells.append(f"{dtype}: {rows}/{len(reference)} rows identical, {100 * tokens:5.1f}% tokens")
  print(f"  {name:34s} " + "   ".join(cells))


def random_models(args) -> None:
  model = build_model(args)
  samples = prompts(model, args.prompts)
  settings = SamplerSettings(gen_length=args.gen_length, steps=args.gen_length, block_length=args.gen_length,
                             stop_sequences=())
  print(f"random models: text hidden {args.hidden}, layers {args.layers}, vocab {args.vocab}; "
        f"{args.prompts} prompts with one 384x384 image; gen_length = steps = {args.gen_length}, greedy")
  for head_scale in (float(s) for s in args.head_scales.split(",")):
    params = random_params(model, samples[0], {**SCALES, "lm_head": head_scale})
    reference, _ = generate(model, params, samples, settings)
    decodes = {d: generate(*in_dtype(model, params, d), samples, settings)[0] for d in LOW_PRECISION}
    probability = top_probability(model, params, samples, args.gen_length)
    report(f"LM head scale {head_scale:g} (top p ~{probability:.2f})", reference, decodes)


def top_probability(model, params, samples, gen_length: int) -> float:
  """Median probability of the argmax at the first step (every answer position masked)."""
  hf = torch_language_model(model, params)
  masks = torch.full((1, gen_length), model.config.tokens.mask)
  tops = []
  with torch.no_grad():
    for sample in samples:
      prompt = torch.from_numpy(prompt_embeddings(model, params, sample))[None]
      embeds = torch.cat([prompt, hf.get_input_embeddings()(masks)], dim=1)
      full_mask = torch.ones(1, 1, embeds.shape[1], embeds.shape[1], dtype=torch.bool)
      logits = hf(inputs_embeds=embeds, attention_mask=full_mask, logits_to_keep=gen_length).logits[0]
      tops.append(torch.softmax(logits.to(torch.float64), -1).max(-1).values.numpy())
  return float(np.median(np.concatenate(tops)))


def demo_model(args) -> None:
  work = DemoWorkdir(pathlib.Path(args.demo_workdir))
  if not work.stage_dir(2).exists():
    print(f"\ndemo model: none in {args.demo_workdir} (run `make demo` first); skipped")
    return
  answers = {d: [p.predicted for p in evaluate_heldout(work, limit=args.demo_questions, dtype=d)]
             for d in ("float32",) + LOW_PRECISION}
  print(f"\ndemo model ({args.demo_workdir}): {len(answers['float32'])} held-out questions, greedy")
  reference = [list(a) for a in answers.pop("float32")]
  report("trained demo model (answer text)", reference, {d: [list(a) for a in v] for d, v in answers.items()})


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  add_model_flags(parser)
  parser.add_argument("--prompts", type=int, default=8)
  parser.add_argument("--gen-length", type=int, default=32)
  parser.add_argument("--head-scales", default="1.3,4,12")
  parser.add_argument("--demo-workdir", default="workdir/demo")
  parser.add_argument("--demo-questions", type=int, default=200)
  args = parser.parse_args()
  random_models(args)
  demo_model(args)


if __name__ == "__main__":
  main()

"""Decoding throughput: the jitted sampler (exact, KV caches with refresh r, dLLM-Cache, threshold
decoding) next to upstream's decode loop re-stated in torch (bench/upstream_generate.py: the whole
canvas and the LM head every step, float64 softmax), same float32 weights, same prompts.

The model is a CPU-sized LLaDA-V with the real image geometry (384 px crops, 729 tokens each): one
384x384 image per prompt (2 crops, 1485 image tokens). Greedy decoding; tokens/s counts generated
tokens (gen_length per row) over wall time, medians of --repeats runs taken in turn (upstream, then
every variant, again); programs are compiled before they are timed. Upstream
decodes one row at a time, so its time at batch B is the sum over the B rows. Every ratio is against
upstream at the same batch size, measured in this run (at later batch sizes also against the
variant's own tokens/s at the first: what batching gains per row); "exact, xla attention" is the
exact decode with the attention the sampler used on CPU before "chunked". `--text-only` prompts
have 62 text tokens and no image.
Usage: python bench/sampler.py [--hidden 512 --layers 8 --vocab 126464 --gen-length 32 --batch-sizes 1,8 ...]
"""

import argparse
import dataclasses
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.timing import alternate  # noqa: E402
from bench.upstream_generate import prompt_embeddings, torch_language_model, upstream_generate  # noqa: E402
from lladav_jax.diffusion.generation import collate_prompts, row_keys  # noqa: E402
from lladav_jax.diffusion.sampler import program  # noqa: E402
from lladav_jax.diffusion.settings import SamplerSettings  # noqa: E402
from lladav_jax.images.crops import sample_visuals  # noqa: E402
from lladav_jax.models import LLaDAConfig, LLaDAV, LLaDAVConfig, ProjectorConfig, SiglipConfig  # noqa: E402
from lladav_jax.models.compute import inference_compute  # noqa: E402
from lladav_jax.samples import build_sample, collate, model_inputs  # noqa: E402
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID, TokenIds  # noqa: E402


SMALL_VISION = SiglipConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)


def build_model(args, attention_impl: str | None = None, *, vision: SiglipConfig = SMALL_VISION,
                vision_select_layer: int = -1):
  """The benchmark's LLaDA-V (text tower from `args`, real image geometry), computing as decoding does
  (`inference_compute`), or with `attention_impl`."""
  text = LLaDAConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                     num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads)
  config = LLaDAVConfig(text=text, vision=vision,
                        projector=ProjectorConfig("mlp2x_gelu", vision.hidden_size, text.hidden_size),
                        vision_select_layer=vision_select_layer, max_length=8192,
                        tokens=TokenIds(bos=1, eos=2, mask=args.vocab - 1, start_header=3, end_header=4, eot=5))
  compute = inference_compute("float32")
  if attention_impl is not None:
    compute = dataclasses.replace(compute, attention_impl=attention_impl)
  return LLaDAV(config, compute)


TEXT_ONLY_WORDS = 58  # a text-only prompt of 62 tokens: 3 header ids, these, 1 closing id


def image_prompt(rng: np.random.Generator) -> tuple[list[int], Image.Image]:
  """A prompt's token ids (one image placeholder, 24 words) and its 384x384 image."""
  pixels = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
  image = Image.fromarray(pixels).resize((384, 384), Image.Resampling.BILINEAR)
  ids = [1, 6, 7, IMAGE_PLACEHOLDER_ID] + [int(i) for i in rng.integers(10, 1000, size=24)] + [8]
  return ids, image


def prompts(model, batch, *, text_only: bool = False):
  """`batch` prompts: one 384x384 image and 24 words each, or (`text_only`) 58 words and no image."""
  rng = np.random.default_rng(0)
  samples = []
  for i in range(batch):
    if text_only:
      ids = [1, 6, 7] + list(rng.integers(10, 1000, size=TEXT_ONLY_WORDS)) + [8]
      samples.append(build_sample(ids, sample_visuals([], model.config), model.config))
      continue
    ids, image = image_prompt(rng)
    samples.append(build_sample(ids, sample_visuals([image], model.config), model.config))
  return samples


# Weight scales of the random model. With small weights every masked position gets the same, unsure
# prediction; larger token embeddings and query/key projections make attention (so predictions)
# depend on position, and a larger head makes predictions confident, so that threshold decoding
# commits a few tokens per step (about a third of the steps here), as with a trained model.
SCALES = {"lm_head": 1.3, "embed_tokens": 0.4, "q_proj": 0.4, "k_proj": 0.4}
WIDTH = 128  # the input width the scales of kernels are for; wider kernels get smaller ones
# This benchmark compares its tokens with upstream's loop in torch, so its attention is less sharp: with
# query/key scales of 0.4 at the default geometry, float32 rounding (torch's summation order against
# ours) grows through the layers to logits 0.6 apart at a spread of 15; at 0.2, 4e-4 apart.
COMPARED_SCALES = dict(SCALES, q_proj=0.2, k_proj=0.2)


def random_params(model, sample, scales=SCALES):
  batch = collate([[sample]], sample.length, sample.num_crops, model.config)
  abstract = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), **model_inputs(batch)))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(abstract)
  keys = jax.random.split(jax.random.key(1), len(leaves))
  out = []
  for key, (path, leaf) in zip(keys, leaves):
    name = jax.tree_util.keystr(path)
    noise = jax.random.normal(key, leaf.shape, leaf.dtype)
    if "scale" in name:
      out.append(1.0 + 0.1 * noise)
      continue
    scale = [v for k, v in scales.items() if k in name and "language_model" in name]
    scale = scale[0] if scale else 0.05
    if "language_model" in name and "kernel" in name:  # scales are for width 128: keep the logits' spread
      scale *= (WIDTH / leaf.shape[-2]) ** 0.5
    out.append(scale * noise)
  return jax.tree_util.tree_unflatten(treedef, out)


def compiled_decode(model, params, samples, settings):
  """The sampler's program compiled ahead of time, so that the timed call does not compile."""
  prompt, lengths = collate_prompts(model, samples)
  keys = row_keys(0, len(samples))
  compiled = program(model, settings).lower(params, prompt, lengths, keys).compile()
  return lambda: jax.block_until_ready(compiled(params, prompt, lengths, keys))


def first_difference(commit_steps: np.ndarray, upstream: list) -> str:
  """Where an exact decode first committed otherwise than upstream's loop, and how close upstream's
  choice was there (its confidences' relative gap): float32 near-ties part the two decodes."""
  steps = [int(np.min(np.where(ours != theirs.commit_steps, np.minimum(ours, theirs.commit_steps), 1 << 30)))
           for ours, theirs in zip(commit_steps, upstream)]
  row = int(np.argmin(steps))
  margin = upstream[row].margins[steps[row]]
  return f"first different commit: row {row}, step {steps[row]}, where upstream's confidences were {margin:.0e} apart"


def add_model_flags(parser: argparse.ArgumentParser, *, hidden=128, layers=2, vocab=16384) -> None:
  """The dimensions of `build_model`'s text tower."""
  parser.add_argument("--hidden", type=int, default=hidden)
  parser.add_argument("--layers", type=int, default=layers)
  parser.add_argument("--heads", type=int, default=8 if hidden >= 512 else 4)
  parser.add_argument("--intermediate", type=int, default=3 * hidden)
  parser.add_argument("--vocab", type=int, default=vocab)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  add_model_flags(parser, hidden=512, layers=8, vocab=126464)
  parser.add_argument("--gen-length", type=int, default=32)
  parser.add_argument("--block-length", type=int, default=32)
  parser.add_argument("--refresh", default="4,16", help="KV-cache refresh intervals to time")
  parser.add_argument("--dllm", default="25,7,0.25", help="dLLM-Cache prompt interval, gen interval, transfer ratio")
  parser.add_argument("--threshold", type=float, default=0.9)
  parser.add_argument("--batch-sizes", default="1,8")
  parser.add_argument("--repeats", type=int, default=1)
  parser.add_argument("--text-only", action="store_true",
                      help="prompts of 62 text tokens, no image (with --gen-length 64 --block-length 64: the "
                           "text-only case)")
  parser.add_argument("--upstream-rows", type=int, default=None,
                      help="time upstream's loop on this many rows of each batch and scale its time to the "
                           "batch (it decodes one row at a time); default: every row")
  args = parser.parse_args()

  model = build_model(args)
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  all_samples = prompts(model, max(batch_sizes), text_only=args.text_only)
  params = random_params(model, all_samples[0], COMPARED_SCALES)
  hf = torch_language_model(model, params)
  exact = SamplerSettings(gen_length=args.gen_length, steps=args.gen_length, block_length=args.block_length,
                          stop_sequences=())
  prompt_interval, gen_interval, ratio = args.dllm.split(",")
  variants = [("jit, exact", model, exact), ("jit, exact, xla attention", build_model(args, "xla"), exact)]
  for mode in ("prefix", "dual"):
    variants += [(f"jit, {mode} cache r={r}", model, dataclasses.replace(exact, cache=mode, refresh=int(r)))
                 for r in args.refresh.split(",")]
  variants += [(f"jit, dLLM-Cache {args.dllm}", model, dataclasses.replace(
                   exact, cache="dllm", prompt_refresh=int(prompt_interval), refresh=int(gen_interval),
                   transfer_ratio=float(ratio))),
               (f"jit, threshold {args.threshold}", model, dataclasses.replace(exact, threshold=args.threshold)),
               (f"jit, threshold {args.threshold} + dual cache", model, dataclasses.replace(
                   exact, threshold=args.threshold, cache="dual"))]

  image = "no image" if args.text_only else f"one 384x384 image: {all_samples[0].num_crops} crops x 729"
  print(f"model: text hidden {args.hidden}, layers {args.layers}, heads {args.heads}, vocab {args.vocab}; "
        f"prompt {all_samples[0].length} tokens ({image}); "
        f"gen_length {args.gen_length}, steps {args.gen_length}, block_length {args.block_length}, greedy; "
        f"float32 on {jax.devices()[0].platform} ({os.cpu_count()} cores), attention {model.compute.attention_impl!r}")
  resolved = exact.resolve(model.config)
  embeds = [prompt_embeddings(model, params, sample) for sample in all_samples]
  first_rates = {}  # tokens/s of each variant at the first batch size: the per-row gain of batching
  for batch in batch_sizes:
    tokens = batch * args.gen_length
    upstream_rows = min(batch, args.upstream_rows or batch)
    runs = {"upstream": lambda: [upstream_generate(hf, e, resolved, model.config.tokens.mask)
                                 for e in embeds[:upstream_rows]]}
    runs.update({name: compiled_decode(variant_model, params, all_samples[:batch], settings)
                 for name, variant_model, settings in variants})
    seconds, outputs = alternate(runs, args.repeats, warm_up=False)  # the programs are compiled already
    seconds["upstream"] *= batch / upstream_rows
    base = tokens / seconds["upstream"]
    scaled = f"; timed on {upstream_rows} of {batch} rows, scaled" if upstream_rows < batch else ""
    print(f"\nbatch {batch}: upstream generate (torch) {base:8.2f} tokens/s   1.00x   "
          f"({seconds['upstream']:.1f} s{scaled})")
    upstream = outputs["upstream"]
    for name, _, settings in variants:
      result, tps = outputs[name], tokens / seconds[name]
      note = f"model evaluations per row: {float(np.mean(result.steps)):.0f}"
      same = np.mean(np.asarray(result.tokens)[:upstream_rows] == np.stack([u.tokens for u in upstream]))
      note += f"; tokens equal to upstream's: {100 * same:.0f}%"
      if settings == exact and same < 1:
        note += "; " + first_difference(np.asarray(result.commit_step)[:upstream_rows], upstream)
      if name in first_rates:
        note += f"; {tps / first_rates[name]:.2f}x its tokens/s at batch {batch_sizes[0]}"
      else:
        first_rates[name] = tps
      print(f"  {name:38s} {tps:8.2f} tokens/s  {tps / base:6.2f}x   ({seconds[name]:.1f} s; {note})")

if __name__ == "__main__":
  main()

"""Decoding throughput: the jitted sampler (exact, KV caches with refresh r, dLLM-Cache, threshold
decoding) next to upstream's decode loop re-stated in torch (bench/upstream_generate.py: the whole
canvas and the LM head every step, float64 softmax), same float32 weights, same prompts.

The model is a CPU-sized LLaDA-V with the real image geometry (384 px crops, 729 tokens each): one
384x384 image per prompt (2 crops, 1485 image tokens). Greedy decoding; tokens/s counts generated
tokens (gen_length per row) over wall time, medians of --repeats runs taken in turn (upstream, then
every variant, again); programs are compiled before they are timed. Upstream
decodes one row at a time, so its time at batch B is the sum over the B rows. Every ratio is against
upstream at the same batch size, measured in this run; "exact, xla attention" is the exact decode
with the attention the sampler used on CPU before "chunked".
Usage: python bench/sampler.py [--hidden 512 --layers 8 --vocab 126464 --gen-length 32 --batch-sizes 1,8 ...]
"""

import argparse
import dataclasses
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from bench.upstream_generate import prompt_embeddings, torch_language_model, upstream_generate  # noqa: E402
from lladav_jax.diffusion.generation import collate_prompts, row_keys  # noqa: E402
from lladav_jax.diffusion.sampler import program  # noqa: E402
from lladav_jax.diffusion.settings import SamplerSettings  # noqa: E402
from lladav_jax.images.crops import sample_visuals  # noqa: E402
from lladav_jax.models import LLaDAConfig, LLaDAV, LLaDAVConfig, ProjectorConfig, SiglipConfig  # noqa: E402
from lladav_jax.models.compute import inference_compute  # noqa: E402
from lladav_jax.samples import build_sample, collate, model_inputs  # noqa: E402
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID, TokenIds  # noqa: E402


def build_model(args, attention_impl: str | None = None):
  """The benchmark's LLaDA-V, computing as decoding does (`inference_compute`), or with `attention_impl`."""
  text = LLaDAConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                     num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads)
  vision = SiglipConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
  config = LLaDAVConfig(text=text, vision=vision,
                        projector=ProjectorConfig("mlp2x_gelu", vision.hidden_size, text.hidden_size),
                        vision_select_layer=-1, max_length=8192,
                        tokens=TokenIds(bos=1, eos=2, mask=args.vocab - 1, start_header=3, end_header=4, eot=5))
  compute = inference_compute("float32")
  if attention_impl is not None:
    compute = dataclasses.replace(compute, attention_impl=attention_impl)
  return LLaDAV(config, compute)


def prompts(model, batch):
  rng = np.random.default_rng(0)
  samples = []
  for i in range(batch):
    pixels = rng.integers(0, 256, size=(24, 24, 3), dtype=np.uint8)
    image = Image.fromarray(pixels).resize((384, 384), Image.Resampling.BILINEAR)
    ids = [1, 6, 7, IMAGE_PLACEHOLDER_ID] + list(rng.integers(10, 1000, size=24)) + [8]
    samples.append(build_sample(ids, sample_visuals([image], model.config), model.config))
  return samples


# Weight scales of the random model. With small weights every masked position gets the same, unsure
# prediction; larger token embeddings and query/key projections make attention (so predictions)
# depend on position, and a larger head makes predictions confident, so that threshold decoding
# commits a few tokens per step (about a third of the steps here), as with a trained model.
SCALES = {"lm_head": 1.3, "embed_tokens": 0.4, "q_proj": 0.4, "k_proj": 0.4}
WIDTH = 128  # the input width the scales of kernels are for; wider kernels get smaller ones


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
  args = parser.parse_args()

  model = build_model(args)
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  all_samples = prompts(model, max(batch_sizes))
  params = random_params(model, all_samples[0])
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

  print(f"model: text hidden {args.hidden}, layers {args.layers}, heads {args.heads}, vocab {args.vocab}; "
        f"prompt {all_samples[0].length} tokens (one 384x384 image: {all_samples[0].num_crops} crops x 729); "
        f"gen_length {args.gen_length}, steps {args.gen_length}, block_length {args.block_length}, greedy; "
        f"float32 on {jax.devices()[0].platform} ({os.cpu_count()} cores), attention {model.compute.attention_impl!r}")
  resolved = exact.resolve(model.config)
  embeds = [prompt_embeddings(model, params, sample) for sample in all_samples]
  for batch in batch_sizes:
    tokens = batch * args.gen_length
    runs = {"upstream": lambda: np.stack([upstream_generate(hf, e, resolved, model.config.tokens.mask)
                                          for e in embeds[:batch]])}
    runs.update({name: compiled_decode(variant_model, params, all_samples[:batch], settings)
                 for name, variant_model, settings in variants})
    times = {name: [] for name in runs}
    outputs = {}
    for _ in range(args.repeats):  # alternated, so that every variant sees the same machine state
      for name, run in runs.items():
        start = time.perf_counter()
        outputs[name] = run()
        times[name].append(time.perf_counter() - start)
    seconds = {name: statistics.median(t) for name, t in times.items()}
    base = tokens / seconds["upstream"]
    print(f"\nbatch {batch}: upstream generate (torch) {base:8.2f} tokens/s   1.00x   ({seconds['upstream']:.1f} s)")
    for name, _, _ in variants:
      result, tps = outputs[name], tokens / seconds[name]
      note = f"model evaluations per row: {float(np.mean(result.steps)):.0f}"
      same = np.mean(np.asarray(result.tokens) == outputs["upstream"])
      note += f"; tokens equal to upstream's: {100 * same:.0f}%"
      print(f"  {name:38s} {tps:8.2f} tokens/s  {tps / base:6.2f}x   ({seconds[name]:.1f} s; {note})")

if __name__ == "__main__":
  main()

"""Decoding throughput: the jitted sampler (exact, KV cache with refresh r, threshold decoding) next
to a per-step Python loop around a jitted forward (upstream's style), same model, same prompts.

The model is a CPU-sized LLaDA-V with the real image geometry (384 px crops, 729 tokens each): one
384x384 image per prompt (2 crops, 1485 image tokens). Greedy decoding; tokens/s counts generated
tokens (gen_length per row) over wall time; programs are compiled before they are timed. Every ratio is
against the Python loop at the same batch size, measured in this run.
Usage: python bench/sampler.py [--hidden 128 --layers 2 --gen-length 64 --batch-sizes 1,8 ...]
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
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from lladav_jax.diffusion.generation import collate_prompts, row_keys  # noqa: E402
from lladav_jax.diffusion.sampler import program  # noqa: E402
from lladav_jax.diffusion.settings import SamplerSettings  # noqa: E402
from lladav_jax.images.crops import sample_visuals  # noqa: E402
from lladav_jax.models import (ComputeConfig, LLaDAConfig, LLaDAV, LLaDAVConfig, ProjectorConfig,  # noqa: E402
                               SiglipConfig)
from lladav_jax.samples import build_sample, collate, model_inputs  # noqa: E402
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID, TokenIds  # noqa: E402


def build_model(args):
  text = LLaDAConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                     num_hidden_layers=args.layers, num_attention_heads=args.heads, num_key_value_heads=args.heads)
  vision = SiglipConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2)
  config = LLaDAVConfig(text=text, vision=vision,
                        projector=ProjectorConfig("mlp2x_gelu", vision.hidden_size, text.hidden_size),
                        vision_select_layer=-1, max_length=8192,
                        tokens=TokenIds(bos=1, eos=2, mask=args.vocab - 1, start_header=3, end_header=4, eot=5))
  return LLaDAV(config, ComputeConfig(dtype="float32", param_dtype="float32", scan_layers=True))


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
    out.append((scale[0] if scale else 0.05) * noise)
  return jax.tree_util.tree_unflatten(treedef, out)


class PythonLoop:
  """Upstream's decode loop: one jitted forward over the whole canvas per step, logits to the host,
  argmax / float64 softmax / top-k per row in NumPy, the committed tokens re-embedded. To measure
  the loop rather than a wasted LM head, the forward applies the head to the generated region only
  (upstream applies it to the whole canvas)."""

  def __init__(self, model, params, samples, gen_length):
    self.model, self.params = model, params
    batch = collate([[s] for s in samples], samples[0].length, samples[0].num_crops, model.config)
    assert all(s.length == samples[0].length for s in samples)
    inputs = model_inputs(batch)
    self.prompt_embeds = jax.jit(lambda p, b: model.apply(
        p, b["input_ids"], b["image_mask"], b["image_index"], b["image_weight"], b["pixel_values"],
        method=LLaDAV.embed_inputs))(params, inputs)
    length = self.prompt_embeds.shape[1]

    def forward(p, prompt_embeds, ids):
      gen_embeds = model.apply(p, ids, method=LLaDAV.embed_tokens)
      embeds = jnp.concatenate([prompt_embeds, gen_embeds], axis=1)
      hidden, _ = model.apply(p, embeds, jnp.broadcast_to(jnp.arange(embeds.shape[1]), embeds.shape[:2]), None,
                              method=lambda m, *a: m.language_model.hidden_states(*a))
      return model.apply(p, hidden[:, length:], method=lambda m, h: m.language_model.logits(h))
    self.forward = jax.jit(forward)
    ids = jnp.zeros((len(samples), gen_length), jnp.int32)
    jax.block_until_ready(self.forward(params, self.prompt_embeds, ids))  # compile

  def run(self, settings: SamplerSettings):
    s = settings.resolve(self.model.config)
    b = self.prompt_embeds.shape[0]
    g, bl = s.gen_length, s.block_length
    mask_id = self.model.config.tokens.mask
    x = np.full((b, g), mask_id, np.int64)
    for block in range(g // bl):
      lo, hi = block * bl, (block + 1) * bl
      count = (x[:, lo:hi] == mask_id).sum(1)
      per = s.steps_per_block
      for i in range(per):
        masked = x == mask_id
        logits = np.asarray(self.forward(self.params, self.prompt_embeds, jnp.asarray(x, jnp.int32)))
        logits = logits[..., :s.vocab_limit].astype(np.float64)
        for t in s.suppressed_ids:
          logits[..., t] = np.where(masked, -np.inf, logits[..., t])
        x0 = logits.argmax(-1)
        z = logits - logits.max(-1, keepdims=True)
        probs = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
        conf = np.take_along_axis(probs, x0[..., None], -1)[..., 0]
        conf[:, hi:] = -np.inf
        conf = np.where(masked, conf, -np.inf)
        for r in range(b):
          k = count[r] // per + (i < count[r] % per)
          chosen = np.argsort(-conf[r], kind="stable")[:k]
          x[r, chosen] = x0[r, chosen]
    return x


def compiled_decode(model, params, samples, settings):
  """The sampler's program compiled ahead of time, so that the timed call does not compile."""
  prompt, lengths = collate_prompts(model, samples)
  keys = row_keys(0, len(samples))
  compiled = program(model, settings).lower(params, prompt, lengths, keys).compile()
  return lambda: jax.block_until_ready(compiled(params, prompt, lengths, keys))


def timed(fn, repeats):
  times, out = [], None
  for _ in range(repeats):
    start = time.perf_counter()
    out = fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times), out


def add_model_flags(parser: argparse.ArgumentParser) -> None:
  """The dimensions of `build_model`'s text tower."""
  parser.add_argument("--hidden", type=int, default=128)
  parser.add_argument("--layers", type=int, default=2)
  parser.add_argument("--heads", type=int, default=4)
  parser.add_argument("--intermediate", type=int, default=384)
  parser.add_argument("--vocab", type=int, default=16384)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  add_model_flags(parser)
  parser.add_argument("--gen-length", type=int, default=64)
  parser.add_argument("--block-length", type=int, default=32)
  parser.add_argument("--refresh", default="1,4,8,16,32")
  parser.add_argument("--threshold", type=float, default=0.9)
  parser.add_argument("--batch-sizes", default="1,8")
  parser.add_argument("--repeats", type=int, default=1)
  args = parser.parse_args()

  model = build_model(args)
  batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
  all_samples = prompts(model, max(batch_sizes))
  params = random_params(model, all_samples[0])
  exact = SamplerSettings(gen_length=args.gen_length, steps=args.gen_length, block_length=args.block_length,
                          stop_sequences=())
  variants = [("jit, no cache (exact)", exact)]
  for mode in ("prefix", "dual"):
    variants += [(f"jit, {mode} cache r={r}", dataclasses.replace(exact, cache=mode, refresh=int(r)))
                 for r in args.refresh.split(",")]
  variants += [(f"jit, threshold {args.threshold}", dataclasses.replace(exact, threshold=args.threshold)),
               (f"jit, threshold {args.threshold} + dual cache", dataclasses.replace(
                   exact, threshold=args.threshold, cache="dual"))]

  print(f"model: text hidden {args.hidden}, layers {args.layers}, heads {args.heads}, vocab {args.vocab}; "
        f"prompt {all_samples[0].length} tokens (one 384x384 image: {all_samples[0].num_crops} crops x 729); "
        f"gen_length {args.gen_length}, steps {args.gen_length}, block_length {args.block_length}, greedy; "
        f"float32 on {jax.devices()[0].platform} ({os.cpu_count()} cores)")
  for batch in batch_sizes:
    samples = all_samples[:batch]
    tokens = batch * args.gen_length
    loop = PythonLoop(model, params, samples, args.gen_length)
    seconds, loop_tokens = timed(lambda: loop.run(exact), args.repeats)
    base = tokens / seconds
    print(f"\nbatch {batch}: Python loop (upstream style) {base:8.1f} tokens/s   1.00x")
    for name, settings in variants:
      seconds, result = timed(compiled_decode(model, params, samples, settings), args.repeats)
      tps = tokens / seconds
      note = f"model evaluations per row: {float(np.mean(result.steps)):.0f}"
      if settings == exact:
        same = np.array_equal(np.asarray(result.tokens), loop_tokens)
        note += f"; tokens identical to the loop's: {'yes' if same else 'NO'}"
      print(f"  {name:34s} {tps:8.1f} tokens/s  {tps / base:6.2f}x   ({note})")

if __name__ == "__main__":
  main()

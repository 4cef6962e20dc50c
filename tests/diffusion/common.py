"""A tiny LLaDA-V with in-vocabulary special ids, random weights that make choices matter, prompts."""

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lladav_jax.images.crops import sample_visuals, video_visual
from lladav_jax.models import LLaDAV
from lladav_jax.samples import build_sample, collate, model_inputs
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID, TokenIds
from tests import tiny

# The tiny vocabulary has 96 ids: the special tokens get small ids, [MASK] the last one.
TOKENS = TokenIds(bos=1, eos=2, mask=95, start_header=3, end_header=4, eot=5)
CONFIG = dataclasses.replace(tiny.LLADAV, tokens=TOKENS)
MODEL = LLaDAV(CONFIG, tiny.F32)
IMG = IMAGE_PLACEHOLDER_ID


@functools.lru_cache(maxsize=None)
def params(seed: int = 0):
  """Default inits give near-uniform logits; scale every weight up so predictions differ sharply."""
  sample = build_sample([1, 2], [], CONFIG)
  batch = collate([[sample]], 2, 1, CONFIG)
  init = nn.unbox(jax.eval_shape(MODEL.init, jax.random.key(seed), **model_inputs(batch)))
  leaves, treedef = jax.tree_util.tree_flatten_with_path(init)
  rng = np.random.default_rng(seed)
  out = []
  for path, leaf in leaves:
    name = jax.tree_util.keystr(path)
    if "scale" in name:  # norm scales around 1
      out.append(jnp.asarray(1.0 + 0.3 * rng.standard_normal(leaf.shape), leaf.dtype))
    else:
      out.append(jnp.asarray(0.3 * rng.standard_normal(leaf.shape), leaf.dtype))
  return jax.tree_util.tree_unflatten(treedef, out)


def text_sample(ids):
  return build_sample(list(ids), [], CONFIG)


def image_sample(ids, sizes, seed=0):
  images = [tiny.random_image(w, h, seed=seed + i) for i, (w, h) in enumerate(sizes)]
  return build_sample(list(ids), sample_visuals(images, CONFIG), CONFIG)


def video_sample(ids, frames, seed=0):
  """One video placeholder; each frame is a crop of 2x2-pooled features (210 tokens): crop counts
  vary at a fraction of the sequence length of anyres images."""
  visual = video_visual([tiny.random_image(64, 48, seed=seed + i) for i in range(frames)], CONFIG)
  return build_sample(list(ids), [visual], CONFIG)


@functools.lru_cache(maxsize=None)
def _embed_fn():
  return jax.jit(lambda p, b: MODEL.apply(p, b["input_ids"], b["image_mask"], b["image_index"],
                                          b["image_weight"], b["pixel_values"], method=LLaDAV.embed_inputs))


@functools.lru_cache(maxsize=None)
def _logits_fn():
  return jax.jit(lambda p, e: MODEL.apply(p, e, method=LLaDAV.logits_from_embeddings))


@functools.lru_cache(maxsize=None)
def _token_embed_fn():
  return jax.jit(lambda p, ids: MODEL.apply(p, ids, method=LLaDAV.embed_tokens))


class Oracle:
  """The plain full forward of one row (no padding, no cache): the reference's only model access.

  Like upstream, the prompt is embedded once; a canvas is the prompt's embeddings followed by the
  embeddings of `ids` (the generated region and suffix, [MASK] where masked).
  """

  def __init__(self, sample, params_):
    self.params = params_
    batch = collate([[sample]], sample.length, sample.num_crops, CONFIG)
    self.prompt_embeds = _embed_fn()(params_, {k: jnp.asarray(v) for k, v in batch.items()})
    self.prompt_length = sample.length

  def logits(self, ids, unconditional=False, block_step=None, block_start=None):
    """ids: int [T] after the prompt -> float64 logits [T, V] of those positions."""
    prompt = self.prompt_embeds
    if unconditional:  # classifier-free guidance: every prompt position holds the [MASK] embedding
      mask = _token_embed_fn()(self.params, jnp.full((1, self.prompt_length), TOKENS.mask, jnp.int32))
      prompt = mask
    tail = _token_embed_fn()(self.params, jnp.asarray(np.asarray(ids, np.int32)[None]))
    embeds = jnp.concatenate([prompt, tail], axis=1)
    logits = _logits_fn()(self.params, embeds)
    return np.asarray(logits[0, self.prompt_length:], np.float64)

"""The model evaluations of one decoding step: full, or a window of positions against a KV cache.

The canvas of every row is laid out the same way, so the generated region sits at one offset P:

  [0, P)            the prompt (image features spliced in), right-padded to the bucket length P
  [P, P + G)        the generated region: the [MASK] embedding, or the committed token's embedding
  [P + G, P + G + S) the fixed suffix

Positions restart at 0 for every row's real prompt tokens and continue through the generated region
and the suffix, so padding changes nothing. Attention is bidirectional over the row's valid positions
(padding keys are hidden); the prompt's turn ids are not used, as upstream decodes with a full mask.

`full`, `window` and `feature_cached` (dLLM-Cache, models/feature_cache.py) return the hidden states
of the step's candidate region only (the generated region, or the current block with the dual KV
cache: `region_length`); the sampler sends the part it needs through the LM head (`logits`).
"""

import flax.struct
import jax
import jax.numpy as jnp

from lladav_jax.models.feature_cache import FeatureCache, feature_cached_hidden
from lladav_jax.models.llada import KVCache
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.models.masks import visible_keys_mask


@flax.struct.dataclass
class Canvas:
  """Per-call constants of the decode (B rows; 2B when classifier-free guidance doubles them)."""

  prompt_embeds: jax.Array  # [B, P, D], image features spliced in
  suffix_embeds: jax.Array  # [S, D]
  mask_embed: jax.Array  # [D]
  positions: jax.Array  # int32 [B, P + G + S]
  valid: jax.Array  # bool [B, P + G + S], False at prompt padding

  @property
  def prompt_length(self) -> int:
    return self.prompt_embeds.shape[1]


def _hidden(module: LLaDAV, embeds, positions, mask, cache):
  return module.language_model.hidden_states(embeds, positions, mask, cache)


class Denoiser:
  """Binds a model and its params to the canvas layout; all methods run inside the decode program."""

  def __init__(self, model: LLaDAV, params, canvas: Canvas, region_length: int, vocab_limit: int):
    self.model, self.params, self.canvas = model, params, canvas
    self.region_length, self.vocab_limit = region_length, vocab_limit

  def embed_tokens(self, tokens: jax.Array) -> jax.Array:
    return self.model.apply(self.params, tokens, method=LLaDAV.embed_tokens)

  def generated_embeds(self, tokens: jax.Array, masked: jax.Array) -> jax.Array:
    """tokens int32 [B, G], masked bool [B, G] -> [B, G, D] (rows repeated for guidance)."""
    embeds = self.embed_tokens(tokens)
    embeds = jnp.where(masked[..., None], self.canvas.mask_embed.astype(embeds.dtype), embeds)
    return self._repeat(embeds)

  def _repeat(self, x: jax.Array) -> jax.Array:
    reps = self.canvas.prompt_embeds.shape[0] // x.shape[0]
    return x if reps == 1 else jnp.concatenate([x] * reps, axis=0)

  def _region(self, hidden: jax.Array, start: jax.Array) -> jax.Array:
    """hidden [B, T, D], the region's offset in it -> [B, region_length, D]."""
    return jax.lax.dynamic_slice_in_dim(hidden, start, self.region_length, axis=1)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Hidden states [B, T, D] -> float32 logits [B, T, vocab_limit]."""
    return self.model.apply(self.params, hidden, method=LLaDAV.head)[..., :self.vocab_limit]

  def _canvas_embeds(self, gen_embeds: jax.Array) -> jax.Array:
    c = self.canvas
    b = c.prompt_embeds.shape[0]
    suffix = jnp.broadcast_to(c.suffix_embeds.astype(gen_embeds.dtype), (b,) + c.suffix_embeds.shape)
    return jnp.concatenate([c.prompt_embeds.astype(gen_embeds.dtype), gen_embeds, suffix], axis=1)

  def full(self, gen_embeds: jax.Array, region_start: jax.Array) -> tuple[jax.Array, KVCache]:
    """Every canvas position -> (the region's hidden states, KVCache of the whole canvas);
    region_start is a generated-region offset."""
    c = self.canvas
    embeds = self._canvas_embeds(gen_embeds)
    mask = visible_keys_mask(c.valid, embeds.shape[1])  # every query sees the row's valid keys
    hidden, cache = self.model.apply(self.params, embeds, c.positions, mask, None, method=_hidden)
    return self._region(hidden, c.prompt_length + region_start), cache

  def window(self, gen_embeds: jax.Array, cache: KVCache, window_start: jax.Array, window_length: int,
             region_start: jax.Array) -> jax.Array:
    """Recomputes canvas positions [window_start, +window_length) against `cache` (keys/values of
    canvas positions [0, cache.length) from the last refresh); returns the region's hidden states
    (the region lies inside the window).

    Cached entries inside the window are stale copies of positions being recomputed: hidden.
    """
    c = self.canvas
    gen_and_suffix = jnp.concatenate(
        [gen_embeds, jnp.broadcast_to(c.suffix_embeds.astype(gen_embeds.dtype),
                                      (gen_embeds.shape[0],) + c.suffix_embeds.shape)], axis=1)
    offset = window_start - c.prompt_length  # the window lies in the generated region + suffix
    embeds = jax.lax.dynamic_slice_in_dim(gen_and_suffix, offset, window_length, axis=1)
    positions = jax.lax.dynamic_slice_in_dim(c.positions, window_start, window_length, axis=1)
    index = jnp.arange(cache.length)
    outside = (index < window_start) | (index >= window_start + window_length)
    cached_visible = c.valid[:, :cache.length] & outside
    own_visible = jnp.ones((embeds.shape[0], window_length), bool)
    mask = visible_keys_mask(jnp.concatenate([cached_visible, own_visible], axis=1), window_length)
    hidden, _ = self.model.apply(self.params, embeds, positions, mask, cache, method=_hidden)
    return self._region(hidden, c.prompt_length + region_start - window_start)


  def feature_cached(self, gen_embeds: jax.Array, cache: FeatureCache, region_start: jax.Array, *,
                     refresh_prompt: bool, transfer: int | None) -> tuple[jax.Array, FeatureCache]:
    """dLLM-Cache's evaluation: the prompt [0, P) and the generated part (answer and suffix) each
    refreshed or served from `cache` (see `feature_cached_hidden`) -> (the region's hidden states, cache)."""
    c, model = self.canvas, self.model
    hidden, cache = feature_cached_hidden(
        model.config.text, model.compute, self.params["params"]["language_model"], self._canvas_embeds(gen_embeds),
        c.positions, c.valid, cache, c.prompt_length, refresh_prompt=refresh_prompt, transfer=transfer)
    return self._region(hidden, region_start), cache


def build_canvas(model: LLaDAV, params, prompt: dict, prompt_lengths: jax.Array, gen_length: int,
                 suffix: tuple[int, ...], mask_id: int, guidance: bool) -> Canvas:
  """prompt: collated arrays [B, P, ...] (see samples.collate); prompt_lengths int[B].

  With guidance the rows are followed by their unconditional copies (every prompt position holds
  the [MASK] embedding, as upstream), so the canvas has 2B rows.
  """
  prompt_embeds = model.apply(params, prompt["input_ids"], prompt["image_mask"], prompt["image_index"],
                              prompt["image_weight"], prompt["pixel_values"], method=LLaDAV.embed_inputs)
  mask_embed = model.apply(params, jnp.full((1, 1), mask_id, jnp.int32), method=LLaDAV.embed_tokens)[0, 0]
  suffix_ids = jnp.asarray(suffix, jnp.int32).reshape(1, len(suffix))
  suffix_embeds = model.apply(params, suffix_ids, method=LLaDAV.embed_tokens)[0]
  b, p = prompt["input_ids"].shape
  after = jnp.arange(gen_length + len(suffix), dtype=jnp.int32)
  positions = jnp.concatenate([prompt["positions"].astype(jnp.int32),
                               prompt_lengths.astype(jnp.int32)[:, None] + after[None]], axis=1)
  valid = jnp.concatenate([prompt["segment_ids"] > 0, jnp.ones((b, after.shape[0]), bool)], axis=1)
  if guidance:
    unconditional = jnp.broadcast_to(mask_embed.astype(prompt_embeds.dtype), prompt_embeds.shape)
    prompt_embeds = jnp.concatenate([prompt_embeds, unconditional], axis=0)
    positions = jnp.concatenate([positions, positions], axis=0)
    valid = jnp.concatenate([valid, valid], axis=0)
  return Canvas(prompt_embeds=prompt_embeds, suffix_embeds=suffix_embeds, mask_embed=mask_embed,
                positions=positions, valid=valid)

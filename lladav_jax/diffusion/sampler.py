"""The whole masked-diffusion decode as one jitted program (upstream `generate_with_embeds`, batched).

Per call: the prompt (with image features) is embedded once; the answer starts as gen_length
[MASK]s. Blocks are decoded left to right (`lax.while_loop`, which stops once every row is done);
inside a block a `lax.while_loop` runs the steps, each one model evaluation, until every row has
filled its block (or the step budget is spent). A step predicts every masked position before the
block's end (upstream's candidates: a [MASK] id committed in an earlier step or block is predicted
again), and commits per row the quota (`schedule`) of the block's most confident predictions, or
those the threshold/factor rule accepts (`remasking`). Masks are booleans; rows never influence
each other, and a row that is done stops changing, so a batch decodes each row exactly as it would
alone.

With a KV cache, the step's model evaluation is a full refresh at every block start and every
`refresh` steps, and otherwise recomputes only a window against the cached keys/values:
  prefix  the window is the generated region + suffix; the prompt's keys/values are cached
  dual    the window is the current block; everything else is cached (Fast-dLLM's DualCache), and
          the candidates are the block's positions only
With refresh = 1 every step is a full evaluation: the exact decode. With dLLM-Cache ("dllm") every
layer's keys/values and sublayer outputs are cached; the batch's model evaluations are counted over
the whole answer (upstream's rule), the generated part is refreshed every `refresh` of them and the
prompt every `prompt_refresh`, and in between a `transfer_ratio` share of the generated positions is
recomputed (models/feature_cache.py). With both intervals 1 it is the exact decode.

`program(model, settings)` returns the jitted function for those settings; jax caches its
compilations by shape (batch, prompt bucket, crops), so one compile serves every call of a bucket.
"""

import collections
import functools

import flax.struct
import jax
import jax.numpy as jnp

from lladav_jax.diffusion import remasking
from lladav_jax.diffusion.denoiser import Denoiser, build_canvas
from lladav_jax.diffusion.schedule import step_quota
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.diffusion.stopping import update_stop
from lladav_jax.models.feature_cache import FeatureCache, empty_feature_cache
from lladav_jax.models.llada import KVCache
from lladav_jax.models.lladav import LLaDAV

# How many times each program was traced (compiled); tests use it to check the compile cache.
TRACE_COUNTS: collections.Counter = collections.Counter()


@flax.struct.dataclass
class DecodeState:
  tokens: jax.Array  # int32 [B, G], the mask id where still masked
  masked: jax.Array  # bool [B, G]
  commit_step: jax.Array  # int32 [B, G], the row's step that committed each position (-1: never)
  stop: jax.Array  # int32 [B], start of the stop sequence in the generated region (G: none)
  row_steps: jax.Array  # int32 [B], model evaluations the row took part in
  evaluations: jax.Array  # int32 [], model evaluations of the batch (dLLM-Cache's refresh clock)
  cache: KVCache | FeatureCache | None  # of the last refresh (2B rows with guidance)


@flax.struct.dataclass
class DecodeResult:
  tokens: jax.Array  # int32 [B, G]
  masked: jax.Array  # bool [B, G]; all False before `stop` once decoding ended
  commit_step: jax.Array  # int32 [B, G]
  stop: jax.Array  # int32 [B]
  steps: jax.Array  # int32 [B]


def decode(model: LLaDAV, settings: SamplerSettings, params, prompt: dict, prompt_lengths: jax.Array,
           row_keys: jax.Array) -> DecodeResult:
  """prompt: the collated model inputs [B, P, ...] (`samples.MODEL_INPUT_KEYS`); prompt_lengths: int[B]
  real tokens; row_keys: key[B].

  `settings` must be resolved (`SamplerSettings.resolve`). Trace with jit (see `program`).
  """
  s = settings
  gen, block = s.gen_length, s.block_length
  batch = prompt["input_ids"].shape[0]
  guidance = s.cfg_scale > 0
  mask_id = model.config.tokens.mask
  canvas = build_canvas(model, params, prompt, prompt_lengths, gen, s.suffix, mask_id, guidance)
  # The candidates of a step: the generated region (upstream), or the block the dual cache recomputes.
  region = block if s.cache == "dual" else gen
  den = Denoiser(model, params, canvas, region, s.vocab_limit)
  canvas_rows, prompt_len = canvas.prompt_embeds.shape[:2]

  def empty_cache():
    if s.cache == "none":
      return None
    length = prompt_len if s.cache == "prefix" else prompt_len + gen + len(s.suffix)
    cfg = model.config.text
    if s.cache == "dllm":
      return empty_feature_cache(cfg, model.compute, canvas_rows, length)
    shape = (cfg.num_hidden_layers, canvas_rows, length, cfg.num_key_value_heads, cfg.head_dim)
    zeros = jnp.zeros(shape, model.compute.activation_dtype)
    return KVCache(zeros, zeros)

  def evaluate(step, evaluations, start, region_start, gen_embeds, cache):
    """One model evaluation -> (the region's hidden states [2B or B, region, D], cache)."""
    if s.cache == "none":
      return den.full(gen_embeds, region_start)[0], cache
    if s.cache == "dllm":
      transfer = int((gen + len(s.suffix)) * s.transfer_ratio)  # upstream: int(generated length * ratio)
      branches = [functools.partial(den.feature_cached, gen_embeds, cache, region_start, refresh_prompt=prompt,
                                    transfer=None if gen_part else transfer)
                  for prompt in (False, True) for gen_part in (False, True)]
      which = 2 * (evaluations % s.prompt_refresh == 0) + (evaluations % s.refresh == 0)
      return jax.lax.switch(which, branches)

    def refresh_branch():
      hidden, fresh = den.full(gen_embeds, region_start)
      if s.cache == "prefix":
        fresh = jax.tree_util.tree_map(lambda a: a[:, :, :prompt_len], fresh)
      return hidden, fresh

    def cached_branch():
      if s.cache == "prefix":
        window_start, window_length = prompt_len, gen + len(s.suffix)
      else:
        window_start, window_length = prompt_len + start, block
      return den.window(gen_embeds, cache, window_start, window_length, region_start), cache

    refresh = step == 0 if s.refresh is None else step % s.refresh == 0
    return jax.lax.cond(refresh, refresh_branch, cached_branch)

  def decode_block(b, state):
    start = b * block
    region_start = start if s.cache == "dual" else 0
    position = region_start + jnp.arange(region, dtype=jnp.int32)  # generated-region offsets

    def view(x, offset, length):
      return jax.lax.dynamic_slice_in_dim(x, offset, length, axis=1)

    count = jnp.sum(view(state.masked, start, block), axis=1)  # quota base: masks at the block's start

    def running(st):
      """bool [B]: upstream's step loop goes on while the block has masks and, once a stop stands,
      masks remain before it (a committed [MASK] id stays a mask, wherever it is)."""
      block_open = jnp.any(view(st.masked, start, block), axis=1)
      before_stop = jnp.any(view(st.masked, region_start, region) & (position < st.stop[:, None]), axis=1)
      return block_open & before_stop

    def step_cond(carry):
      step, st = carry
      return (step < s.max_steps_per_block) & jnp.any(running(st))

    def step_body(carry):
      step, st = carry
      active = running(st)
      masked_region = view(st.masked, region_start, region)
      limit = jnp.minimum(start + block, st.stop)[:, None]  # nothing from the block's end or a stop on
      eligible = masked_region & (position < limit) & active[:, None]
      hidden, cache = evaluate(step, st.evaluations, start, region_start,
                               den.generated_embeds(st.tokens, st.masked), st.cache)
      token_keys, remask_keys = jax.vmap(remasking.step_keys)(row_keys, st.row_steps)

      def predict(offset, length):
        """Tokens and confidences at region positions [offset, +length)."""
        logits = den.logits(view(hidden, offset, length))
        if guidance:
          logits = remasking.guide(logits[:batch], logits[batch:], s.cfg_scale)
        logits = remasking.suppress(logits, view(masked_region, offset, length), s.suppressed_ids)
        at = view(position[None], offset, length)[0]
        proposal = remasking.choose_tokens(logits, s.temperature, token_keys, at)
        return proposal, remasking.confidence(logits, proposal, s.remasking, remask_keys, at)

      def predict_block():
        """The block only, placed in the region (the rest is not eligible)."""
        proposal, conf = predict(start - region_start, block)
        place = lambda part, fill: jax.lax.dynamic_update_slice_in_dim(
            jnp.full((batch, region), fill, part.dtype), part, start - region_start, axis=1)
        return place(proposal, 0), jax.tree_util.tree_map(lambda x: place(x, 0.0), conf)

      if region == block:
        proposal, confidence = predict(0, region)
      else:  # the LM head over the whole region only while a row has a [MASK] id left before the block
        stale = jnp.any(eligible & (position < start))
        proposal, confidence = jax.lax.cond(stale, lambda: predict(0, region), predict_block)
      if s.threshold is not None:
        commit = remasking.select_threshold(confidence, eligible, s.threshold)
      elif s.factor is not None:
        commit = remasking.select_factor(confidence, eligible, s.factor)
      else:
        commit = remasking.select_top(confidence, eligible, step_quota(count, s.steps_per_block, step))
      put = lambda full, part: jax.lax.dynamic_update_slice_in_dim(full, part, region_start, axis=1)
      tokens = put(st.tokens, jnp.where(commit, proposal, view(st.tokens, region_start, region)))
      # Upstream finds masks by comparing embeddings with [MASK]'s: a committed [MASK] id stays one.
      masked = put(st.masked, masked_region & ~(commit & (proposal != mask_id)))
      commit_step = put(st.commit_step, jnp.where(commit, st.row_steps[:, None],
                                                  view(st.commit_step, region_start, region)))
      stop = update_stop(st.stop, tokens, ~masked, s.stop_sequences, s.stop_order)
      new = DecodeState(tokens=tokens, masked=masked, commit_step=commit_step, stop=stop,
                        row_steps=st.row_steps + active.astype(jnp.int32), evaluations=st.evaluations + 1,
                        cache=cache)
      return step + 1, new

    _, state = jax.lax.while_loop(step_cond, step_body, (jnp.int32(0), state))
    return state

  def blocks_cond(carry):
    b, st = carry
    # A row has work left while its stop (if any) lies beyond the block's start.
    return (b < s.num_blocks) & jnp.any(st.stop > b * block)

  def blocks_body(carry):
    b, st = carry
    return b + 1, decode_block(b, st)

  init = DecodeState(
      tokens=jnp.full((batch, gen), mask_id, jnp.int32),
      masked=jnp.ones((batch, gen), bool),
      commit_step=jnp.full((batch, gen), -1, jnp.int32),
      stop=jnp.full((batch,), gen, jnp.int32),
      row_steps=jnp.zeros((batch,), jnp.int32),
      evaluations=jnp.int32(0),
      cache=empty_cache())
  _, final = jax.lax.while_loop(blocks_cond, blocks_body, (jnp.int32(0), init))
  return DecodeResult(tokens=final.tokens, masked=final.masked, commit_step=final.commit_step,
                      stop=final.stop, steps=final.row_steps)


@functools.lru_cache(maxsize=64)
def _program(config, compute, settings: SamplerSettings):
  model = LLaDAV(config, compute)
  key = (config, compute, settings)

  def run(params, prompt, prompt_lengths, row_keys):
    TRACE_COUNTS[key] += 1  # runs once per trace, i.e. per compilation
    return decode(model, settings, params, prompt, prompt_lengths, row_keys)
  return jax.jit(run)


def program(model: LLaDAV, settings: SamplerSettings):
  """The jitted decode `(params, prompt, prompt_lengths, row_keys) -> DecodeResult` for `settings`
  (resolved here); one per (model config, compute, settings), compiled once per input shape."""
  return _program(model.config, model.compute, settings.resolve(model.config))


def trace_count(model: LLaDAV, settings: SamplerSettings) -> int:
  return TRACE_COUNTS[(model.config, model.compute, settings.resolve(model.config))]

"""Upstream's Monte-Carlo estimate of a continuation's masked-diffusion loss (lmms-eval `loglikelihood`).

    scored = scored_sample(tokenizer, config, context, continuation, images)
    estimator = MonteCarloLoss(model, params, mc_num=128, batch_size_ppl=32, vocab_limit=len(tokenizer))
    loss = estimator.estimate(scored.full, jax.random.key(0))
    is_greedy = greedy_reproduces(model, params, scored, vocab_limit=len(tokenizer))

LLaDA-V's lmms-eval wrapper runs the training forward (`LLaDAModelLM.forward`) `mc_num` times on prompt +
continuation with every id after the prompt as a label (`build_scored_prompt`: the continuation,
`<|eot_id|>` and the generation prompt the chat template appends again), `batch_size_ppl` rows per
forward, and averages the losses. Per draw k:

    t_k ~ U(0, 1),  p_k = (1 - 1e-3) t_k + 1e-3,  each label masked with probability p_k
    value_k = (sum over masked labels i of CE_i / p_k) / (number of labels)

(a label that already is [MASK] counts as masked). The estimate is the mean of the `mc_num` values, which
is what upstream's mean of per-forward batch means is. It is a loss (positive, per label token), not a
log-probability: lmms-eval's multiple-choice rule takes its argmin.

One jitted program per shape draws the masks with the training loss's `corrupt`, runs the vision tower
once, the language tower `batch_size_ppl` draws at a time (`lax.map`), and the LM head at the label
positions only, over the tokenizer's vocabulary (upstream shrinks the head to it). `greedy_reproduces` is
upstream's `suffix_greedy_prediction`: a greedy decode of as many tokens as there are labels, in as many
steps, one block, no stop string, must give the labels back.
"""

import dataclasses
import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from PIL import Image

from lladav_jax import sharding
from lladav_jax.data.prompts import build_scored_prompt
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.diffusion import loss as diffusion_loss
from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.eval.bucketing import ladder
from lladav_jax.images.crops import inference_visuals
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.models.masks import make_attention_mask
from lladav_jax.samples import Sample, build_sample, collate
from lladav_jax.tokens import IGNORE_LABEL, IMAGE_PLACEHOLDER_ID

MC_NUM = 128  # the upstream wrapper's defaults
BATCH_SIZE_PPL = 32
_ROW_KEYS = ("input_ids", "positions", "segment_ids", "image_mask", "image_index", "image_weight", "pixel_values",
             "labels")


@dataclasses.dataclass(frozen=True)
class ScoredSample:
  """prompt: the prompt's sample; full: prompt + continuation, labelled after the prompt (IGNORE_LABEL at
  the prompt and its image tokens); target: the label ids."""

  prompt: Sample
  full: Sample
  target: tuple[int, ...]


def scored_sample(tokenizer: Tokenizer, config: LLaDAVConfig, context: str, continuation: str,
                  images: Sequence[Image.Image] = ()) -> ScoredSample:
  """The samples upstream's `loglikelihood` scores, images in the evaluation layout."""
  prompt_ids, full_ids = build_scored_prompt(tokenizer, context, continuation, len(images))
  target = full_ids[len(prompt_ids):]
  if not target or IMAGE_PLACEHOLDER_ID in target:
    raise ValueError(f"continuation {continuation!r} gives no label ids after the prompt"
                     if not target else f"continuation {continuation!r} holds an <image>")
  visuals = inference_visuals(list(images), config)
  labels = [IGNORE_LABEL] * len(prompt_ids) + list(target)
  return ScoredSample(build_sample(prompt_ids, visuals, config), build_sample(full_ids, visuals, config, labels=labels),
                      tuple(int(t) for t in target))


def _label_logits(module: LLaDAV, embeds, positions, segment_ids, label_index):
  """The language tower on [B, T, D] embeddings; float32 logits [B, K, V] at the K label positions."""
  hidden, _ = module.language_model.hidden_states(embeds, positions, make_attention_mask(segment_ids))
  return module.language_model.logits(jnp.take(hidden, label_index, axis=1))


@functools.lru_cache(maxsize=32)
def _programs(config: LLaDAVConfig, compute, mc_num: int, batch_size_ppl: int, vocab_limit: int):
  """(draw, values, estimate_values) jitted for these settings; see MonteCarloLoss."""
  model = LLaDAV(config, compute)
  mask_id = config.tokens.mask

  def draw(key, row):
    ids, labels, segments = (jnp.broadcast_to(row[k], (mc_num,) + row[k].shape[1:])
                             for k in ("input_ids", "labels", "segment_ids"))
    _, corruption = diffusion_loss.corrupt(key, ids, labels, segments, mask_id=mask_id)
    return corruption

  def values(params, row, label_index, corruption):
    clean = model.apply(params, row["input_ids"], row["image_mask"], row["image_index"], row["image_weight"],
                        row["pixel_values"], method=LLaDAV.embed_inputs)
    mask_embed = model.apply(params, jnp.full((1, 1), mask_id, jnp.int32), method=LLaDAV.embed_tokens)[0, 0]
    labels = row["labels"][:, label_index]
    segments = row["segment_ids"][:, label_index]
    positions = jnp.broadcast_to(row["positions"], (batch_size_ppl,) + row["positions"].shape[1:])
    segment_ids = jnp.broadcast_to(row["segment_ids"], positions.shape)

    def one_draw(logits, masked, p_mask):
      numerator, _ = diffusion_loss.diffusion_loss_terms(
          logits[None], labels, segments, diffusion_loss.Corruption(masked=masked[None], p_mask=p_mask[None]))
      return numerator  # (sum of CE / p over the masked labels) / number of labels

    def forward(chunk):
      # Supervised positions are never image positions, so masking the embedding is masking the id.
      noisy = jnp.where(chunk.masked[..., None], mask_embed.astype(clean.dtype), clean)
      logits = model.apply(params, noisy, positions, segment_ids, label_index, method=_label_logits)
      return jax.vmap(one_draw)(logits[..., :vocab_limit], chunk.masked[:, label_index], chunk.p_mask[:, label_index])

    chunks = jax.tree.map(lambda x: x.reshape((mc_num // batch_size_ppl, batch_size_ppl) + x.shape[1:]), corruption)
    return jax.lax.map(forward, chunks).reshape(mc_num)

  def estimate_values(params, row, label_index, key):
    return values(params, row, label_index, draw(key, row))

  return jax.jit(draw), jax.jit(values), jax.jit(estimate_values)


class MonteCarloLoss:
  """Upstream's estimator for one model: `mc_num` draws, `batch_size_ppl` per language-tower pass.

  Rows are padded to length and crop buckets (padding is masked out of attention), so requests of
  similar size share a compiled program. `mesh` / `rules`: run on this device mesh (the draws are split
  over its batch axes, so `batch_size_ppl` must be a multiple of their size)."""

  def __init__(self, model: LLaDAV, params, *, mc_num: int = MC_NUM, batch_size_ppl: int = BATCH_SIZE_PPL,
               vocab_limit: int | None = None, mesh: Mesh | None = None, rules=None):
    if mc_num < 1 or batch_size_ppl < 1 or mc_num % batch_size_ppl:
      raise ValueError(f"mc_num {mc_num} must be a positive multiple of batch_size_ppl {batch_size_ppl}")
    self.rules = sharding.normalize_rules(rules if rules is not None else sharding.DEFAULT_LOGICAL_AXIS_RULES)
    if mesh is not None and batch_size_ppl % sharding.batch_shards(mesh, self.rules):
      raise ValueError(f"batch_size_ppl {batch_size_ppl} is not a multiple of the "
                       f"{sharding.batch_shards(mesh, self.rules)} batch shards of the mesh {dict(mesh.shape)}")
    self.model, self.params, self.mesh = model, params, mesh
    self.mc_num = mc_num
    limit = model.config.text.vocab_size if vocab_limit is None else int(vocab_limit)
    self._draw, self._values, self._estimate = _programs(model.config, model.compute, mc_num, batch_size_ppl, limit)

  def row(self, sample: Sample) -> tuple[dict, np.ndarray]:
    """The sample as one padded row (arrays [1, T, ...]) and its label positions int32 [K] (padded
    with position 0, which is never a label)."""
    crops = ladder(sample.num_crops) if sample.num_crops else 0
    batch = collate([[sample]], ladder(sample.length, 64), crops, self.model.config)
    positions = np.flatnonzero(batch["labels"][0] != IGNORE_LABEL)
    label_index = np.zeros(ladder(len(positions)), np.int32)
    label_index[:len(positions)] = positions
    return {k: batch[k] for k in _ROW_KEYS}, label_index

  def _run(self, fn, *args):
    if self.mesh is None:
      return fn(*args)
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      return fn(*args)

  def draws(self, sample: Sample, key: jax.Array) -> diffusion_loss.Corruption:
    """The masks and p of the `mc_num` draws `values(sample, key)` uses: arrays [mc_num, T] over `row`."""
    row, _ = self.row(sample)
    return self._run(self._draw, key, row)

  def values(self, sample: Sample, key: jax.Array | None = None,
             corruption: diffusion_loss.Corruption | None = None) -> np.ndarray:
    """float32 [mc_num]: each draw's value, with the masks drawn from `key` or the given `corruption`."""
    row, label_index = self.row(sample)
    if corruption is None:
      out = self._run(self._estimate, self.params, row, label_index, key)
    else:
      out = self._run(self._values, self.params, row, label_index, corruption)
    return np.asarray(jax.device_get(out))

  def estimate(self, sample: Sample, key: jax.Array) -> float:
    """Upstream's loss estimate: the mean over the draws."""
    return float(np.mean(self.values(sample, key), dtype=np.float64))


def greedy_reproduces(model: LLaDAV, params, scored: ScoredSample, *, vocab_limit: int | None = None) -> bool:
  """Upstream's `suffix_greedy_prediction`: does a greedy decode of len(target) tokens in len(target)
  steps (one block, low-confidence remasking, no stop) give exactly the target?"""
  size = len(scored.target)
  settings = SamplerSettings(gen_length=size, steps=size, block_length=size, stop_sequences=(),
                             vocab_limit=vocab_limit)
  (answer,), _ = generate(model, params, [scored.prompt], settings)
  return tuple(int(t) for t in answer) == scored.target

"""The masked-diffusion training objective of LLaDA-V (paper Eq. 1, upstream `LLaDAModelLM.forward`).

Per sample, t ~ U(0, 1) and p = (1 - eps) t + eps. Every supervised token (label != IGNORE_LABEL)
is replaced by [MASK] with probability p; prompt and image tokens stay clean. The loss is

    sum over samples s of  [ sum over masked tokens i of s:  CE_i / p_s ]  /  n_s
    -------------------------------------------------------------------------
                               number of samples

with n_s the number of supervised tokens of sample s. With one sample per row this is upstream's
formula exactly (it divides by the batch size). A packed row holds several samples (segments): each
is normalised by its own n_s, draws its own t, and counts once in the denominator.

Upstream finds the masked positions by comparing embeddings with the [MASK] embedding, so a
supervised token that already is [MASK] in the data counts as masked whatever the draw; `corrupt`
does the same. [MASK] replaces the token id before embedding, which equals upstream's replacement
of the embedding because supervised positions are never image positions.

Complementary masking (LaViDa): each sample is seen a second time with the complement of its mask,
the supervised tokens the first view left clean, masked with probability 1 - p (`complement`).
Each view weights its masked tokens by one over their own masking probability, 1 / p and 1 / (1 - p),
so each is an unbiased estimate of the same objective, and the two are averaged (every sample counts
twice in the denominator). With it p is drawn in [eps, 1 - eps] so neither view's weight exceeds 1 / eps.

The loss is returned as (numerator, number of samples) so that gradient accumulation can add
numerators over micro-batches and divide once: the result cannot depend on the split.

`diffusion_loss_terms` takes the logits [B, L, V]; `chunked_diffusion_loss_terms` takes the LM head's
input and the head and never holds more than one chunk's logits (compute.loss_chunk).
"""

from typing import Callable

import flax.struct
import jax
import jax.numpy as jnp

from lladav_jax.tokens import IGNORE_LABEL

MASK_EPS = 1e-3  # upstream forward_process_embeds(eps=1e-3)


@flax.struct.dataclass
class Corruption:
  """Which tokens are masked, and the masking probability p of each token's sample."""

  masked: jax.Array  # bool [B, L]
  p_mask: jax.Array  # float32 [B, L]


def supervised_mask(labels: jax.Array, segment_ids: jax.Array) -> jax.Array:
  """bool [B, L]: tokens that carry a target (padding, segment 0, never does)."""
  return (labels != IGNORE_LABEL) & (segment_ids > 0)


def sample_starts(segment_ids: jax.Array) -> jax.Array:
  """bool [B, L]: first token of each packed sample (segments are contiguous runs of one id > 0)."""
  previous = jnp.pad(segment_ids[:, :-1], ((0, 0), (1, 0)), constant_values=0)
  return (segment_ids > 0) & (segment_ids != previous)


def num_samples(segment_ids: jax.Array) -> jax.Array:
  """Number of samples (segments) in a batch: int32 scalar."""
  return jnp.sum(sample_starts(segment_ids), dtype=jnp.int32)


def corrupt(rng: jax.Array, input_ids: jax.Array, labels: jax.Array, segment_ids: jax.Array, *,
            mask_id: int, eps: float = MASK_EPS, max_p: float = 1.0) -> tuple[jax.Array, Corruption]:
  """Draws t per sample and masks supervised tokens with probability p = (max_p - eps) t + eps.

  input_ids, labels, segment_ids: int32 [B, L]. Returns the noisy ids (masked tokens -> mask_id)
  and the Corruption. A sample's t is the draw at its segment index, so packed samples get their
  own t, and one sample per row gets one t per row as upstream (max_p = 1: p = (1 - eps) t + eps).
  """
  b, length = input_ids.shape
  t_key, mask_key = jax.random.split(rng)
  t_table = jax.random.uniform(t_key, (b, length), jnp.float32)
  t = jnp.take_along_axis(t_table, jnp.clip(segment_ids - 1, 0, length - 1), axis=1)
  p_mask = (max_p - eps) * t + eps
  draw = jax.random.uniform(mask_key, (b, length), jnp.float32)
  masked = ((draw < p_mask) | (input_ids == mask_id)) & supervised_mask(labels, segment_ids)
  noisy_ids = jnp.where(masked, jnp.asarray(mask_id, input_ids.dtype), input_ids)
  return noisy_ids, Corruption(masked=masked, p_mask=p_mask)


def complement(input_ids: jax.Array, labels: jax.Array, segment_ids: jax.Array, corruption: Corruption, *,
               mask_id: int) -> tuple[jax.Array, Corruption]:
  """The second view of complementary masking: the supervised tokens that `corruption` left clean
  are masked (with probability 1 - p), the ones it masked are shown. Returns (noisy ids, Corruption)."""
  masked = supervised_mask(labels, segment_ids) & ~corruption.masked
  noisy_ids = jnp.where(masked, jnp.asarray(mask_id, input_ids.dtype), input_ids)
  return noisy_ids, Corruption(masked=masked, p_mask=1.0 - corruption.p_mask)


def tokens_per_sample(weights: jax.Array, segment_ids: jax.Array) -> jax.Array:
  """For each token, the sum of `weights` over its own sample: [B, L] (0 at padding)."""
  length = segment_ids.shape[1]

  def one_row(w, seg):
    totals = jax.ops.segment_sum(w, seg, num_segments=length + 1)
    return totals[seg]

  return jax.vmap(one_row)(weights, segment_ids)


def token_weights(labels: jax.Array, segment_ids: jax.Array,
                  corruption: Corruption) -> tuple[jax.Array, jax.Array, dict[str, jax.Array]]:
  """(masked bool [B, L], each token's weight 1 / (p n_s) in the numerator (0 unless masked), counts)."""
  supervised = supervised_mask(labels, segment_ids)
  n_supervised = tokens_per_sample(supervised.astype(jnp.float32), segment_ids)
  masked = corruption.masked & supervised
  weight = jnp.where(masked, 1.0 / (corruption.p_mask * jnp.maximum(n_supervised, 1.0)), 0.0)
  counts = dict(masked_tokens=jnp.sum(masked, dtype=jnp.int32),
                supervised_tokens=jnp.sum(supervised, dtype=jnp.int32))
  return masked, weight, counts


def weighted_cross_entropy(logits: jax.Array, labels: jax.Array, masked: jax.Array, weight: jax.Array) -> jax.Array:
  """sum over masked tokens of weight * CE; logits [..., V] are cast to float32 (as upstream)."""
  logits = logits.astype(jnp.float32)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  target = jnp.take_along_axis(logits, jnp.where(masked, labels, 0)[..., None], axis=-1)[..., 0]
  return jnp.sum(jnp.where(masked, log_z - target, 0.0) * weight)


def diffusion_loss_terms(logits: jax.Array, labels: jax.Array, segment_ids: jax.Array,
                         corruption: Corruption) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Numerator of the loss (sum over samples of their normalised masked CE) and token counts.

  logits: [B, L, V] (cast to float32 for the cross-entropy, as upstream); labels, segment_ids:
  int32 [B, L]. Divide the numerator by `num_samples` of the whole batch for the loss.
  """
  masked, weight, counts = token_weights(labels, segment_ids, corruption)
  return weighted_cross_entropy(logits, labels, masked, weight), counts


def chunked_diffusion_loss_terms(hidden: jax.Array, head: Callable[[jax.Array], jax.Array], labels: jax.Array,
                                 segment_ids: jax.Array, corruption: Corruption, *,
                                 chunk: int) -> tuple[jax.Array, dict[str, jax.Array]]:
  """`diffusion_loss_terms(head(hidden), ...)` without the [B, L, V] logits.

  hidden: [B, L, D], the LM head's input; head: [B, C, D] -> logits [B, C, V]. Each row's masked
  tokens are moved to its front (the sum does not depend on the order), then the head and the
  cross-entropy run on `chunk` positions at a time in a scan whose body is rematerialised: the
  backward pass recomputes one chunk's logits instead of keeping them all. A chunk where no row has
  a masked token is skipped (its loss and gradients are zero): after the move that is every chunk
  past the most masked tokens of any row, so the head runs on that many positions (rounded up to
  whole chunks) instead of L. Prompts, image tokens and padding are never supervised.
  """
  masked, weight, counts = token_weights(labels, segment_ids, corruption)
  b, length = labels.shape
  order = jnp.argsort(~masked, axis=1, stable=True)  # masked positions first, in order
  chunks = -(-length // chunk)

  def chunked(x):  # [B, L, ...] -> [chunks, B, chunk, ...], reordered and padded with zeros
    x = jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)
    x = jnp.pad(x, ((0, 0), (0, chunks * chunk - length)) + ((0, 0),) * (x.ndim - 2))
    return jnp.moveaxis(x.reshape((b, chunks, chunk) + x.shape[2:]), 1, 0)

  @jax.checkpoint
  def chunk_numerator(hidden_c, labels_c, masked_c, weight_c):
    return jax.lax.cond(jnp.any(masked_c),
                        lambda: weighted_cross_entropy(head(hidden_c), labels_c, masked_c, weight_c),
                        lambda: jnp.zeros((), jnp.float32))

  def body(total, xs):
    return total + chunk_numerator(*xs), None

  numerator, _ = jax.lax.scan(body, jnp.zeros((), jnp.float32),
                              (chunked(hidden), chunked(labels), chunked(masked), chunked(weight)))
  return numerator, counts

"""LLaDA-V: SigLIP crops -> projector -> features spliced into LLaDA's input embeddings.

All crops of a batch go through the vision tower in one call. Each row's projected crop features
plus the learned image-newline vector form a feature table; the image tokens of the sequence are
gathered from it with the indices and weights that `lladav_jax.samples` computes on the host
(static shapes, no host logic on device). Parameter names: `vision_tower/...`, `mm_projector/linear_N`, `image_newline`,
`language_model/...` (see the towers' modules).
"""

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from lladav_jax import sharding
from lladav_jax.images.feature_layout import TAPS
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.models import layers
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.llada import LLaDAModel, default_positions
from lladav_jax.models.masks import make_attention_mask
from lladav_jax.models.projector import Projector
from lladav_jax.models.siglip import SiglipVisionTower
from lladav_jax.samples import abstract_inputs

class LLaDAV(nn.Module):
  config: LLaDAVConfig
  compute: ComputeConfig = ComputeConfig()

  def setup(self):
    cfg, compute = self.config, self.compute
    # Only the layers up to the selected one are built: later ones never affect the features.
    self.vision_tower = SiglipVisionTower(cfg.vision, compute, num_layers=cfg.vision_feature_depth)
    self.mm_projector = Projector(cfg.projector, compute)
    self.language_model = LLaDAModel(cfg.text, compute)
    width = cfg.text.hidden_size
    self.image_newline = self.param(
        "image_newline",
        nn.with_logical_partitioning(nn.initializers.normal(width ** -0.5), (sharding.EMBED,)),
        (width,), compute.weight_dtype)

  def encode_crops(self, pixel_values: jax.Array) -> jax.Array:
    """pixel_values: [B, C, S, S, 3] -> projected features [B, C * T, D] (T tokens per crop)."""
    b, c = pixel_values.shape[:2]
    crops = pixel_values.reshape((b * c,) + pixel_values.shape[2:])
    features = self.vision_tower(crops)["last_hidden_state"]
    projected = self.mm_projector(features)
    return projected.reshape(b, c * projected.shape[1], projected.shape[2])

  def embed_tokens(self, token_ids: jax.Array) -> jax.Array:
    return self.language_model.embed(token_ids)

  def embed_inputs(self, input_ids: jax.Array, image_mask: jax.Array | None = None,
                   image_index: jax.Array | None = None, image_weight: jax.Array | None = None,
                   pixel_values: jax.Array | None = None) -> jax.Array:
    """Token embeddings with image features spliced in where `image_mask` is set -> [B, L, D]."""
    embeds = self.embed_tokens(input_ids)
    if image_mask is None:
      return embeds
    b = input_ids.shape[0]
    newline = jnp.broadcast_to(jnp.asarray(self.image_newline, embeds.dtype), (b, 1, embeds.shape[-1]))
    if pixel_values is not None and pixel_values.shape[1] > 0:
      table = jnp.concatenate([self.encode_crops(pixel_values).astype(embeds.dtype), newline], axis=1)
    else:  # no crops in this batch: the newline vector is all a row can reference
      table = newline
    gather_row = jax.vmap(lambda t, i: t[i])
    image_embeds = jnp.zeros(embeds.shape, jnp.float32)
    for tap in range(TAPS):  # one [B, L, D] gather at a time keeps the peak memory at one copy
      picked = gather_row(table, image_index[..., tap]).astype(jnp.float32)
      image_embeds = image_embeds + image_weight[..., tap, None].astype(jnp.float32) * picked
    embeds = jnp.where(image_mask[..., None], image_embeds.astype(embeds.dtype), embeds)
    return layers.constrain(embeds, (sharding.ACT_BATCH, sharding.ACT_LENGTH, sharding.ACT_EMBED))

  def final_hidden_from_embeddings(self, embeds: jax.Array, positions: jax.Array | None = None,
                                   segment_ids: jax.Array | None = None,
                                   turn_ids: jax.Array | None = None) -> jax.Array:
    """Language tower on spliced embeddings -> the LM head's input [B, L, D] (after the final norm).
    No segment ids = one unpadded segment per row."""
    b, length = embeds.shape[:2]
    if positions is None:
      positions = default_positions(b, length)
    mask = None if segment_ids is None and turn_ids is None else make_attention_mask(
        jnp.ones((b, length), jnp.int32) if segment_ids is None else segment_ids, turn_ids)
    hidden, _ = self.language_model.hidden_states(embeds, positions, mask)
    return hidden

  def head(self, hidden: jax.Array) -> jax.Array:
    """The LM head: [B, L, D] -> float32 logits [B, L, V]."""
    return self.language_model.logits(hidden)

  def logits_from_embeddings(self, embeds: jax.Array, positions: jax.Array | None = None,
                             segment_ids: jax.Array | None = None,
                             turn_ids: jax.Array | None = None) -> jax.Array:
    """Language tower and head on spliced embeddings. No segment ids = one unpadded segment per row."""
    return self.head(self.final_hidden_from_embeddings(embeds, positions, segment_ids, turn_ids))

  def final_hidden_states(self, input_ids: jax.Array, positions: jax.Array | None = None,
                          segment_ids: jax.Array | None = None, image_mask: jax.Array | None = None,
                          image_index: jax.Array | None = None, image_weight: jax.Array | None = None,
                          pixel_values: jax.Array | None = None, turn_ids: jax.Array | None = None) -> jax.Array:
    """`__call__` without the LM head: [B, L, D], for a loss that applies the head chunk by chunk."""
    embeds = self.embed_inputs(input_ids, image_mask, image_index, image_weight, pixel_values)
    return self.final_hidden_from_embeddings(embeds, positions, segment_ids, turn_ids)

  def __call__(self, input_ids: jax.Array, positions: jax.Array | None = None,
               segment_ids: jax.Array | None = None, image_mask: jax.Array | None = None,
               image_index: jax.Array | None = None, image_weight: jax.Array | None = None,
               pixel_values: jax.Array | None = None, turn_ids: jax.Array | None = None) -> jax.Array:
    """Logits [B, L, V]. Passing `turn_ids` selects the "dialogue causal" mask (see masks.py)."""
    return self.head(self.final_hidden_states(input_ids, positions, segment_ids, image_mask, image_index,
                                              image_weight, pixel_values, turn_ids))


def init_inputs(config: LLaDAVConfig) -> dict[str, jax.ShapeDtypeStruct]:
  """The smallest inputs `LLaDAV.init` traces (the params do not depend on the batch's shape)."""
  return abstract_inputs(config, batch=1, seq_len=8, max_crops=1)


def abstract_params(model: LLaDAV) -> Any:
  """The model's "params" collection as ShapeDtypeStructs, still boxed with their logical axis
  names; nothing is computed."""
  return jax.eval_shape(model.init, jax.random.key(0), **init_inputs(model.config))["params"]

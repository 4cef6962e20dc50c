"""The LLaDA language tower: a LLaMA-style transformer whose attention has no causal mask.

Parameter names follow the Hugging Face LLaMA layout (`embed_tokens`, `layers.N.self_attn.q_proj`,
`mlp.gate_proj`, `norm`, `lm_head`), so weight conversion is transposes and stacking only.

Every layer returns its input's keys/values (after RoPE) with its output, so `hidden_states` always
gives (hidden, KVCache); a forward that does not use them lets XLA drop them. Given a `KVCache` of
S earlier keys/values per layer, the L input positions attend to [cached S ; their own L] keys
under a caller-built mask over S + L keys (models/masks.py). Which cached entries a query may see
(e.g. not the stale copies of positions that are being recomputed) is entirely the mask's business.
"""

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from lladav_jax import sharding
from lladav_jax.model_config import LLaDAConfig
from lladav_jax.models import layers
from lladav_jax.models.attention import dot_product_attention
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.masks import AttentionMask


_TOKENS = (sharding.ACT_BATCH, sharding.ACT_LENGTH, sharding.ACT_EMBED)


@flax.struct.dataclass
class KVCache:
  """Keys and values after RoPE, per layer: [layers, B, S, kv_heads, head_dim] each."""

  key: jax.Array
  value: jax.Array

  @property
  def length(self) -> int:
    return self.key.shape[2]


class LLaDAAttention(nn.Module):
  config: LLaDAConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: AttentionMask | None,
               cache: KVCache | None = None) -> tuple[jax.Array, KVCache]:
    """(attention output, this input's keys/values); `cache` holds one layer's earlier keys/values."""
    cfg, dtype, pdt = self.config, self.compute.activation_dtype, self.compute.weight_dtype
    b, length, _ = x.shape
    heads, kv_heads, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    kw = dict(use_bias=False, dtype=dtype, param_dtype=pdt, stddev=cfg.initializer_range, lora=self.compute.lora,
              tower="language")
    q = layers.dense(heads * head_dim, (sharding.EMBED, sharding.HEADS), name="q_proj", **kw)(x)
    k = layers.dense(kv_heads * head_dim, (sharding.EMBED, sharding.KV_HEADS), name="k_proj", **kw)(x)
    v = layers.dense(kv_heads * head_dim, (sharding.EMBED, sharding.KV_HEADS), name="v_proj", **kw)(x)
    head_axes = (sharding.ACT_BATCH, sharding.ACT_LENGTH, sharding.ACT_HEADS, sharding.ACT_KV)
    q = layers.constrain(layers.tag(q.reshape(b, length, heads, head_dim), "query_proj"), head_axes)
    k = layers.constrain(layers.tag(k.reshape(b, length, kv_heads, head_dim), "key_proj"), head_axes)
    v = layers.constrain(layers.tag(v.reshape(b, length, kv_heads, head_dim), "value_proj"), head_axes)
    q, k = layers.apply_rotary(q, cos, sin), layers.apply_rotary(k, cos, sin)
    keys, values = k, v
    if cache is not None:
      keys = jnp.concatenate([cache.key.astype(k.dtype), k], axis=1)
      values = jnp.concatenate([cache.value.astype(v.dtype), v], axis=1)
    out = dot_product_attention(q, keys, values, mask, self.compute.attention_impl)
    out = layers.tag(out.reshape(b, length, heads * head_dim), "attention_out")
    out = layers.dense(cfg.hidden_size, (sharding.HEADS, sharding.EMBED), name="o_proj", **kw)(out)
    return out, KVCache(k, v)


class LLaDAMLP(nn.Module):
  config: LLaDAConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dtype, pdt = self.config, self.compute.activation_dtype, self.compute.weight_dtype
    kw = dict(use_bias=False, dtype=dtype, param_dtype=pdt, stddev=cfg.initializer_range, lora=self.compute.lora,
              tower="language")
    gate = layers.dense(cfg.intermediate_size, (sharding.EMBED, sharding.MLP), name="gate_proj", **kw)(x)
    up = layers.dense(cfg.intermediate_size, (sharding.EMBED, sharding.MLP), name="up_proj", **kw)(x)
    hidden = layers.constrain(nn.silu(gate) * up, (sharding.ACT_BATCH, sharding.ACT_LENGTH, sharding.ACT_MLP))
    return layers.dense(cfg.hidden_size, (sharding.MLP, sharding.EMBED), name="down_proj", **kw)(hidden)


class LLaDABlock(nn.Module):
  """Pre-norm block: x + attn(norm(x)); x + mlp(norm(x))."""

  config: LLaDAConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, cache=None) -> tuple[jax.Array, KVCache]:
    """(x, this input's keys/values); `cache` holds one layer's earlier keys/values."""
    cfg, dtype, pdt = self.config, self.compute.activation_dtype, self.compute.weight_dtype
    norm = dict(eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=pdt)
    h = layers.RMSNorm(name="input_layernorm", **norm)(x)
    attn, new_cache = LLaDAAttention(cfg, self.compute, name="self_attn")(h, cos, sin, mask, cache)
    x = x + attn
    h = layers.RMSNorm(name="post_attention_layernorm", **norm)(x)
    x = x + LLaDAMLP(cfg, self.compute, name="mlp")(h)
    x = layers.constrain(x, _TOKENS)
    return x, new_cache


class LLaDAModel(nn.Module):
  """Token embedding, N bidirectional blocks, final RMSNorm and an untied LM head."""

  config: LLaDAConfig
  compute: ComputeConfig

  def setup(self):
    cfg, dtype, pdt = self.config, self.compute.activation_dtype, self.compute.weight_dtype
    self.embed_tokens = layers.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=pdt,
                                     stddev=cfg.initializer_range)
    self.run_layers = layers.stack_layers(
        LLaDABlock, num_layers=cfg.num_hidden_layers, scan=self.compute.scan_layers,
        remat_policy=self.compute.remat_policy, broadcast_args=3, per_layer_args=1, name="layers",
        collect_outputs=True, config=cfg, compute=self.compute)
    self.norm = layers.RMSNorm(eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=pdt)
    # float32 logits in every compute dtype: confidences near 1 and the loss need the precision.
    self.lm_head = layers.dense(cfg.vocab_size, (sharding.EMBED, sharding.VOCAB), name="lm_head", use_bias=False,
                                dtype=dtype, param_dtype=pdt, stddev=cfg.initializer_range, float32_output=True)

  def embed(self, token_ids: jax.Array) -> jax.Array:
    """token_ids: int[B, L] -> [B, L, D]."""
    embeds = self.embed_tokens(token_ids)
    return layers.constrain(embeds, _TOKENS)

  def hidden_states(self, embeds: jax.Array, positions: jax.Array, mask: AttentionMask | None,
                    cache: KVCache | None = None) -> tuple[jax.Array, KVCache]:
    """embeds: [B, L, D]; positions: int[B, L]; mask over L keys or None (all see all)
    -> (normed [B, L, D], KVCache of the L input positions).

    With `cache` (S positions per layer) the mask's keys are the S + L [cached ; own] ones.
    """
    cos, sin = layers.rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
    x = layers.constrain(embeds.astype(self.compute.activation_dtype), _TOKENS)
    x, new_cache = self.run_layers(x, cos, sin, mask, cache)
    return self.norm(x), new_cache

  def logits(self, hidden: jax.Array) -> jax.Array:
    logits = self.lm_head(hidden)
    return layers.constrain(logits, (sharding.ACT_BATCH, sharding.ACT_LENGTH, sharding.ACT_VOCAB))

  def __call__(self, embeds: jax.Array, positions: jax.Array, mask: AttentionMask | None) -> jax.Array:
    """embeds [B, L, D] -> float32 logits [B, L, V]."""
    hidden, _ = self.hidden_states(embeds, positions, mask)
    return self.logits(hidden)


def default_positions(batch: int, length: int) -> jax.Array:
  return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))

"""The LLaDA language tower: a LLaMA-style transformer whose attention has no causal mask.

Parameter names follow the Hugging Face LLaMA layout (`embed_tokens`, `layers.N.self_attn.q_proj`,
`mlp.gate_proj`, `norm`, `lm_head`), so weight conversion is transposes and stacking only.

Cache-aware forward (decoding): given a `KVCache` of S earlier keys/values per layer, the L input
positions attend to [cached S ; their own L] keys under a caller-built mask [B, 1, L, S + L], and
their own keys/values come back as a new `KVCache`. With an empty cache (S = 0) this is the plain
forward that also returns every layer's keys/values. Which cached entries a query may see (e.g. not
the stale copies of positions that are being recomputed) is entirely the mask's business.
"""

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from lladav_jax import sharding as S
from lladav_jax.models import layers as L
from lladav_jax.model_config import ComputeConfig, LLaDAConfig


@flax.struct.dataclass
class KVCache:
  """Keys and values after RoPE, per layer: [layers, B, S, kv_heads, head_dim] each."""

  key: jax.Array
  value: jax.Array

  @classmethod
  def empty(cls, config: LLaDAConfig, batch: int, dtype) -> "KVCache":
    shape = (config.num_hidden_layers, batch, 0, config.num_key_value_heads, config.head_dim)
    return cls(jnp.zeros(shape, dtype), jnp.zeros(shape, dtype))

  @property
  def length(self) -> int:
    return self.key.shape[2]


class LLaDAAttention(nn.Module):
  config: LLaDAConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array, cos: jax.Array, sin: jax.Array, mask: jax.Array | None,
               cache: KVCache | None = None):
    """Returns the attention output; with `cache` (one layer's), also this input's KVCache."""
    cfg, dtype, pdt = self.config, L.dtype_of(self.compute.dtype), L.dtype_of(self.compute.param_dtype)
    b, length, _ = x.shape
    heads, kv_heads, head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
    kw = dict(use_bias=False, dtype=dtype, param_dtype=pdt, stddev=cfg.initializer_range)
    q = L.dense(heads * head_dim, (S.EMBED, S.HEADS), name="q_proj", **kw)(x)
    k = L.dense(kv_heads * head_dim, (S.EMBED, S.KV_HEADS), name="k_proj", **kw)(x)
    v = L.dense(kv_heads * head_dim, (S.EMBED, S.KV_HEADS), name="v_proj", **kw)(x)
    head_axes = (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_HEADS, S.ACT_KV)
    q = L.constrain(L.tag(q.reshape(b, length, heads, head_dim), "query_proj"), head_axes)
    k = L.constrain(L.tag(k.reshape(b, length, kv_heads, head_dim), "key_proj"), head_axes)
    v = L.constrain(L.tag(v.reshape(b, length, kv_heads, head_dim), "value_proj"), head_axes)
    q, k = L.apply_rotary(q, cos, sin), L.apply_rotary(k, cos, sin)
    keys, values = k, v
    if cache is not None:
      keys = jnp.concatenate([cache.key.astype(k.dtype), k], axis=1)
      values = jnp.concatenate([cache.value.astype(v.dtype), v], axis=1)
    out = L.attention(q, keys, values, mask, self.compute.attention_impl)
    out = L.tag(out.reshape(b, length, heads * head_dim), "attention_out")
    out = L.dense(cfg.hidden_size, (S.HEADS, S.EMBED), name="o_proj", **kw)(out)
    return out if cache is None else (out, KVCache(k, v))


class LLaDAMLP(nn.Module):
  config: LLaDAConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dtype, pdt = self.config, L.dtype_of(self.compute.dtype), L.dtype_of(self.compute.param_dtype)
    kw = dict(use_bias=False, dtype=dtype, param_dtype=pdt, stddev=cfg.initializer_range)
    gate = L.dense(cfg.intermediate_size, (S.EMBED, S.MLP), name="gate_proj", **kw)(x)
    up = L.dense(cfg.intermediate_size, (S.EMBED, S.MLP), name="up_proj", **kw)(x)
    hidden = L.constrain(nn.silu(gate) * up, (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_MLP))
    return L.dense(cfg.hidden_size, (S.MLP, S.EMBED), name="down_proj", **kw)(hidden)


class LLaDABlock(nn.Module):
  """Pre-norm block: x + attn(norm(x)); x + mlp(norm(x))."""

  config: LLaDAConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x, cos, sin, mask, cache=None):
    """Returns (x, None), or (x, this input's KVCache) when given one layer's `cache`."""
    cfg, dtype, pdt = self.config, L.dtype_of(self.compute.dtype), L.dtype_of(self.compute.param_dtype)
    norm = dict(eps=cfg.rms_norm_eps, dtype=dtype, param_dtype=pdt)
    h = L.RMSNorm(name="input_layernorm", **norm)(x)
    attn = LLaDAAttention(cfg, self.compute, name="self_attn")(h, cos, sin, mask, cache)
    attn, new_cache = attn if cache is not None else (attn, None)
    x = x + attn
    h = L.RMSNorm(name="post_attention_layernorm", **norm)(x)
    x = x + LLaDAMLP(cfg, self.compute, name="mlp")(h)
    x = L.constrain(x, (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_EMBED))
    return x, new_cache


class LLaDAModel(nn.Module):
  """Token embedding, N bidirectional blocks, final RMSNorm and an untied LM head."""

  config: LLaDAConfig
  compute: ComputeConfig

  def setup(self):
    cfg, pdt = self.config, L.dtype_of(self.compute.param_dtype)
    self.embed_tokens = L.Embed(cfg.vocab_size, cfg.hidden_size, dtype=L.dtype_of(self.compute.dtype),
                                param_dtype=pdt, stddev=cfg.initializer_range)
    self.run_layers = L.stack_layers(
        LLaDABlock, num_layers=cfg.num_hidden_layers, scan=self.compute.scan_layers,
        remat_policy=self.compute.remat_policy, broadcast_args=3, per_layer_args=1, name="layers",
        collect_outputs=True, config=cfg, compute=self.compute)
    self.norm = L.RMSNorm(eps=cfg.rms_norm_eps, dtype=L.dtype_of(self.compute.dtype), param_dtype=pdt)
    self.lm_head = L.dense(cfg.vocab_size, (S.EMBED, S.VOCAB), name="lm_head", use_bias=False,
                           dtype=L.dtype_of(self.compute.dtype), param_dtype=pdt,
                           stddev=cfg.initializer_range)

  def embed(self, token_ids: jax.Array) -> jax.Array:
    """token_ids: int[B, L] -> [B, L, D]."""
    embeds = self.embed_tokens(token_ids)
    return L.constrain(embeds, (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_EMBED))

  def hidden_states(self, embeds: jax.Array, positions: jax.Array, mask: jax.Array | None,
                    cache: KVCache | None = None):
    """embeds: [B, L, D]; positions: int[B, L]; mask: bool[B, 1, L, L] or None -> normed [B, L, D].

    With `cache` (S positions per layer) the mask is bool[B, 1, L or 1, S + L] over [cached ; own] keys
    and the result is (normed [B, L, D], KVCache of the L input positions).
    """
    cos, sin = L.rotary_cos_sin(positions, self.config.head_dim, self.config.rope_theta)
    x = L.constrain(embeds.astype(L.dtype_of(self.compute.dtype)), (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_EMBED))
    x, new_cache = self.run_layers(x, cos, sin, mask, cache)
    return self.norm(x) if cache is None else (self.norm(x), new_cache)

  def logits(self, hidden: jax.Array) -> jax.Array:
    logits = self.lm_head(hidden)
    return L.constrain(logits, (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_VOCAB))

  def __call__(self, embeds: jax.Array, positions: jax.Array, mask: jax.Array | None) -> jax.Array:
    """embeds [B, L, D] -> logits [B, L, V] (in the compute dtype)."""
    return self.logits(self.hidden_states(embeds, positions, mask))


def default_positions(batch: int, length: int) -> jax.Array:
  return jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))

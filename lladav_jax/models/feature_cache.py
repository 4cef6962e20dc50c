"""The LLaDA tower under dLLM-Cache (maomaocun/dLLM-cache, which upstream LLaDA-V's demo turns on):
every layer keeps, per position, its keys/values and the outputs of its attention and MLP sublayers,
and a step recomputes only some of them.

The canvas is split at P into the prompt [0, P) and the generated part [P, T). A step says which
parts it refreshes (static flags, so each combination is one traced program):
  prompt refreshed  the prompt's positions are recomputed through every layer;
                    else its keys/values and sublayer outputs come from the cache;
  gen refreshed     every generated position is recomputed;
                    else, per layer, the value projections of all generated positions are
                    recomputed from the current residual stream, the `transfer` positions whose
                    values moved most (lowest cosine similarity with the cached ones) get new
                    queries, keys, attention and MLP outputs, and the rest reuse the cached
                    outputs (their new values are kept, their keys are not: upstream's rule).
The residual stream of the generated positions is always carried: x + attention + MLP, with each
sublayer output either fresh or cached. Refreshing both parts is the full forward.

Shapes: B rows, P prompt positions, G generated positions, T = P + G, D hidden, L layers.
"""

import flax.struct
import jax
import jax.numpy as jnp

from lladav_jax import sharding
from lladav_jax.model_config import LLaDAConfig
from lladav_jax.models import layers
from lladav_jax.models.attention import dot_product_attention
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.llada import LLaDAMLP
from lladav_jax.models.masks import visible_keys_mask


@flax.struct.dataclass
class FeatureCache:
  """Per layer and position: keys/values after RoPE [L, B, T, KVH, Dh]; sublayer outputs [L, B, T, D]."""

  key: jax.Array
  value: jax.Array
  attention: jax.Array
  mlp: jax.Array


@flax.struct.dataclass
class _Rows:
  """Some positions of the canvas: their residual stream [B, N, D] and RoPE tables [B, N, Dh]."""

  x: jax.Array
  cos: jax.Array
  sin: jax.Array


def empty_feature_cache(config: LLaDAConfig, compute: ComputeConfig, rows: int, length: int) -> FeatureCache:
  dtype = compute.activation_dtype
  kv = jnp.zeros((config.num_hidden_layers, rows, length, config.num_key_value_heads, config.head_dim), dtype)
  features = jnp.zeros((config.num_hidden_layers, rows, length, config.hidden_size), dtype)
  return FeatureCache(kv, kv, features, features)


def _gather(x: jax.Array, index: jax.Array) -> jax.Array:
  """x [B, N, ...], index int [B, K] -> [B, K, ...]."""
  return jax.vmap(lambda row, i: row[i])(x, index)


def _scatter(x: jax.Array, index: jax.Array, update: jax.Array) -> jax.Array:
  """x [B, N, ...] with rows `index` [B, K] replaced by update [B, K, ...]."""
  return jax.vmap(lambda row, i, u: row.at[i].set(u))(x, index, update)


def _cosine(a: jax.Array, b: jax.Array) -> jax.Array:
  """[B, N, H, Dh] x2 -> float32 [B, N], the cosine similarity of the flattened heads."""
  a = a.reshape(a.shape[:2] + (-1,)).astype(jnp.float32)
  b = b.reshape(b.shape[:2] + (-1,)).astype(jnp.float32)
  eps = 1e-8  # torch's cosine_similarity floor on the norms
  norms = jnp.maximum(jnp.linalg.norm(a, axis=-1), eps) * jnp.maximum(jnp.linalg.norm(b, axis=-1), eps)
  return jnp.sum(a * b, axis=-1) / norms


class _Layer:
  """One block's sublayers applied to any subset of positions, from that layer's params."""

  def __init__(self, config: LLaDAConfig, compute: ComputeConfig, params):
    self.config, self.compute, self.params = config, compute, params
    dtype, pdt = compute.activation_dtype, compute.weight_dtype
    # The adapters of a LoRA model act here as in the module (models/llada.py's LLaDAAttention).
    self._kw = dict(use_bias=False, dtype=dtype, param_dtype=pdt, lora=compute.lora, tower="language")
    self._norm = layers.RMSNorm(eps=config.rms_norm_eps, dtype=dtype, param_dtype=pdt)

  def norm(self, name: str, x: jax.Array) -> jax.Array:
    return self._norm.apply({"params": self.params[name]}, x)

  def project(self, name: str, x: jax.Array, heads: int, cos=None, sin=None) -> jax.Array:
    """x [B, N, D] -> [B, N, heads, Dh], rotated when cos/sin are given."""
    cfg = self.config
    dense = layers.dense(heads * cfg.head_dim, (sharding.EMBED, sharding.HEADS), name=name, **self._kw)
    out = dense.apply({"params": self.params["self_attn"][name]}, x)
    out = out.reshape(x.shape[:2] + (heads, cfg.head_dim))
    return out if cos is None else layers.apply_rotary(out, cos, sin)

  def attention_out(self, attended: jax.Array) -> jax.Array:
    dense = layers.dense(self.config.hidden_size, (sharding.HEADS, sharding.EMBED), name="o_proj", **self._kw)
    return dense.apply({"params": self.params["self_attn"]["o_proj"]}, attended.reshape(attended.shape[:2] + (-1,)))

  def mlp(self, x: jax.Array) -> jax.Array:
    h = self.norm("post_attention_layernorm", x)
    return LLaDAMLP(self.config, self.compute).apply({"params": self.params["mlp"]}, h)


def _layer_step(config, compute, params, prompt: _Rows | None, gen: _Rows, cache: FeatureCache, visible,
                transfer: int | None):
  """One layer. prompt: the prompt's rows when it is refreshed, else None; transfer: None when the
  generated part is refreshed, else how many of its positions are recomputed. cache: this layer's
  slices [B, T, ...]. -> (prompt x or None, gen x, this layer's new cache)."""
  layer = _Layer(config, compute, params)
  heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
  p_len = cache.key.shape[1] - gen.x.shape[1]
  queries, key_parts, value_parts = [], [], []
  if prompt is not None:
    h = layer.norm("input_layernorm", prompt.x)
    queries.append(layer.project("q_proj", h, heads, prompt.cos, prompt.sin))
    key_parts.append(layer.project("k_proj", h, kv_heads, prompt.cos, prompt.sin))
    value_parts.append(layer.project("v_proj", h, kv_heads))
  else:
    key_parts.append(cache.key[:, :p_len])
    value_parts.append(cache.value[:, :p_len])
  h = layer.norm("input_layernorm", gen.x)
  cached_keys, cached_values = cache.key[:, p_len:], cache.value[:, p_len:]
  chosen = None
  if transfer is None:
    queries.append(layer.project("q_proj", h, heads, gen.cos, gen.sin))
    key_parts.append(layer.project("k_proj", h, kv_heads, gen.cos, gen.sin))
    value_parts.append(layer.project("v_proj", h, kv_heads))
  elif transfer > 0:
    values = layer.project("v_proj", h, kv_heads)
    _, chosen = jax.lax.top_k(-_cosine(values, cached_values), transfer)  # the least similar; ties: lower index
    h_chosen, cos, sin = (_gather(a, chosen) for a in (h, gen.cos, gen.sin))
    queries.append(layer.project("q_proj", h_chosen, heads, cos, sin))
    key_parts.append(_scatter(cached_keys, chosen, layer.project("k_proj", h_chosen, kv_heads, cos, sin)))
    value_parts.append(values)
  else:
    key_parts.append(cached_keys)
    value_parts.append(cached_values)
  keys, values = jnp.concatenate(key_parts, axis=1), jnp.concatenate(value_parts, axis=1)

  fresh = None
  if queries:
    q = jnp.concatenate(queries, axis=1)
    mask = visible_keys_mask(visible, q.shape[1])
    fresh = layer.attention_out(dot_product_attention(q, keys, values, mask, compute.attention_impl))
  n_prompt = 0 if prompt is None else p_len
  attention_prompt = cache.attention[:, :p_len] if prompt is None else fresh[:, :p_len]
  attention_gen = cache.attention[:, p_len:]
  if transfer is None:
    attention_gen = fresh[:, n_prompt:]
  elif chosen is not None:
    attention_gen = _scatter(attention_gen, chosen, fresh[:, n_prompt:])
  gen_x = gen.x + attention_gen

  mlp_prompt = cache.mlp[:, :p_len]
  prompt_x = None
  if prompt is not None:
    prompt_x = prompt.x + attention_prompt
    mlp_prompt = layer.mlp(prompt_x)
    prompt_x = prompt_x + mlp_prompt
  mlp_gen = cache.mlp[:, p_len:]
  if transfer is None:
    mlp_gen = layer.mlp(gen_x)
  elif chosen is not None:
    mlp_gen = _scatter(mlp_gen, chosen, layer.mlp(_gather(gen_x, chosen)))
  gen_x = gen_x + mlp_gen
  new = FeatureCache(keys, values, jnp.concatenate([attention_prompt, attention_gen], axis=1),
                     jnp.concatenate([mlp_prompt, mlp_gen], axis=1))
  return prompt_x, gen_x, new


def feature_cached_hidden(config: LLaDAConfig, compute: ComputeConfig, params, embeds: jax.Array,
                          positions: jax.Array, visible: jax.Array, cache: FeatureCache, prompt_length: int, *,
                          refresh_prompt: bool, transfer: int | None) -> tuple[jax.Array, FeatureCache]:
  """params: the language tower's; embeds [B, T, D] (the canvas); positions int [B, T]; visible bool
  [B, T] (keys every query sees); transfer: None to refresh the generated part, else the number of its
  positions recomputed -> (the generated part's normed hidden states [B, G, D], the new cache)."""
  cos, sin = layers.rotary_cos_sin(positions, config.head_dim, config.rope_theta)
  x = embeds.astype(compute.activation_dtype)
  split = lambda a: (a[:, :prompt_length], a[:, prompt_length:])
  (prompt_x, gen_x), (prompt_cos, gen_cos), (prompt_sin, gen_sin) = split(x), split(cos), split(sin)
  if compute.scan_layers:
    stacked = params["layers"]
  else:
    stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a),
                                     *[params[f"layers_{i}"] for i in range(config.num_hidden_layers)])

  def body(carry, layer_inputs):
    prompt_x, gen_x = carry
    layer_params, layer_cache = layer_inputs
    prompt = None if not refresh_prompt else _Rows(prompt_x, prompt_cos, prompt_sin)
    prompt_x, gen_x, new = _layer_step(config, compute, layer_params, prompt, _Rows(gen_x, gen_cos, gen_sin),
                                       layer_cache, visible, transfer)
    return (prompt_x if refresh_prompt else carry[0], gen_x), new

  (_, gen_x), new_cache = jax.lax.scan(body, (prompt_x, gen_x), (stacked, cache))
  normed = layers.RMSNorm(eps=config.rms_norm_eps, dtype=compute.activation_dtype,
                          param_dtype=compute.weight_dtype).apply({"params": params["norm"]}, gen_x)
  return normed, new_cache

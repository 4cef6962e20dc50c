"""The LLaDA tower in plain NumPy (float64), with stale keys/values for chosen positions.

`forward(..., stale=(embeds_then, recompute))` is what a KV cache computes: every layer's keys and
values of positions outside `recompute` come from the canvas as it was at the last refresh
(`embeds_then`); positions in `recompute` use their current ones. No stale = the exact forward.
"""

import numpy as np

from lladav_jax.model_config import LLaDAConfig


def _rms(x, scale, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _rope(x, positions, theta):
  """x: [L, H, Dh], rotate-half RoPE."""
  dh = x.shape[-1]
  inv = 1.0 / theta ** (np.arange(0, dh, 2) / dh)
  freqs = positions[:, None] * inv[None]
  cos, sin = np.cos(np.concatenate([freqs, freqs], -1)), np.sin(np.concatenate([freqs, freqs], -1))
  rotated = np.concatenate([-x[..., dh // 2:], x[..., :dh // 2]], axis=-1)
  return x * cos[:, None] + rotated * sin[:, None]


def _layer(p, i, x, positions, config):
  """One layer's (keys, values) before attention and a function finishing the layer."""
  get = lambda *path: np.asarray(_walk(p, path)[i], np.float64)
  h = _rms(x, get("input_layernorm", "scale"), config.rms_norm_eps)
  heads, kv_heads, dh = config.num_attention_heads, config.num_key_value_heads, config.head_dim
  q = _rope((h @ get("self_attn", "q_proj", "kernel")).reshape(-1, heads, dh), positions, config.rope_theta)
  k = _rope((h @ get("self_attn", "k_proj", "kernel")).reshape(-1, kv_heads, dh), positions, config.rope_theta)
  v = (h @ get("self_attn", "v_proj", "kernel")).reshape(-1, kv_heads, dh)

  def finish(keys, values, visible):
    group = heads // kv_heads
    keys, values = np.repeat(keys, group, axis=1), np.repeat(values, group, axis=1)
    scores = np.einsum("lhd,shd->hls", q, keys) / np.sqrt(dh)
    scores = np.where(visible[None], scores, -np.inf)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probs = scores / scores.sum(-1, keepdims=True)
    attn = np.einsum("hls,shd->lhd", probs, values).reshape(x.shape[0], -1)
    y = x + attn @ get("self_attn", "o_proj", "kernel")
    h2 = _rms(y, get("post_attention_layernorm", "scale"), config.rms_norm_eps)
    gate, up = h2 @ get("mlp", "gate_proj", "kernel"), h2 @ get("mlp", "up_proj", "kernel")
    return y + (gate / (1 + np.exp(-gate)) * up) @ get("mlp", "down_proj", "kernel")
  return k, v, finish


def _walk(tree, path):
  for key in path:
    tree = tree[key]
  return tree


def forward(lm_params, config: LLaDAConfig, embeds, positions, valid, stale=None):
  """lm_params: the `language_model` subtree (scanned layout); embeds [L, D]; positions [L];
  valid bool [L] (keys that may be seen); stale: None or (embeds_then [L, D], recompute bool [L]).
  Returns float64 logits [L, V] (meaningful at valid rows; with stale, at `recompute` rows)."""
  x = np.asarray(embeds, np.float64)
  then = None if stale is None else np.asarray(stale[0], np.float64)
  visible = np.broadcast_to(np.asarray(valid, bool)[None], (len(x), len(x)))
  for i in range(config.num_hidden_layers):
    k, v, finish = _layer(lm_params["layers"], i, x, positions, config)
    if then is not None:
      k_then, v_then, finish_then = _layer(lm_params["layers"], i, then, positions, config)
      recompute = np.asarray(stale[1], bool)[:, None, None]
      keys, values = np.where(recompute, k, k_then), np.where(recompute, v, v_then)
      then = finish_then(k_then, v_then, visible)
    else:
      keys, values = k, v
    x = finish(keys, values, visible)
  x = _rms(x, np.asarray(lm_params["norm"]["scale"], np.float64), config.rms_norm_eps)
  return x @ np.asarray(lm_params["lm_head"]["kernel"], np.float64)

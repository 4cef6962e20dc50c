"""dLLM-Cache re-stated in plain NumPy (float64), from the rule of maomaocun/dLLM-cache's LLaDA hook:
a stateful model whose every call is one model evaluation of the decode.

Call n (from 0) refreshes the prompt when n % prompt_refresh == 0 and the generated part when
n % refresh == 0. Per layer: a refreshed part gets new queries, keys, values, attention and MLP outputs;
a prompt that is not refreshed keeps all of its cached ones; a generated part that is not refreshed gets
new values everywhere, and new queries, keys, attention and MLP outputs at the int(G * ratio) positions
whose new values have the lowest cosine similarity with the cached ones; everything else comes from
the cache. The residual stream adds the (fresh or cached) sublayer outputs.
"""

import numpy as np

from lladav_jax.model_config import LLaDAConfig
from tests.diffusion.numpy_llada import _rms, _rope, _walk


class NumpyDLLMCache:
  def __init__(self, lm_params, config: LLaDAConfig, prompt_length: int, refresh: int, prompt_refresh: int,
               transfer_ratio: float):
    self.params, self.config, self.p = lm_params, config, prompt_length
    self.refresh, self.prompt_refresh, self.ratio = refresh, prompt_refresh, transfer_ratio
    self.calls = 0
    self.cache = [None] * config.num_hidden_layers  # per layer: dict of k, v, attn, mlp over the canvas

  def _get(self, i, *path):
    return np.asarray(_walk(self.params["layers"], path)[i], np.float64)

  def _attend(self, i, q, keys, values):
    cfg = self.config
    group = cfg.num_attention_heads // cfg.num_key_value_heads
    keys, values = np.repeat(keys, group, axis=1), np.repeat(values, group, axis=1)
    scores = np.einsum("lhd,shd->hls", q, keys) / np.sqrt(cfg.head_dim)
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    probs = scores / scores.sum(-1, keepdims=True)
    out = np.einsum("hls,shd->lhd", probs, values).reshape(len(q), -1)
    return out @ self._get(i, "self_attn", "o_proj", "kernel")

  def _mlp(self, i, x):
    h = _rms(x, self._get(i, "post_attention_layernorm", "scale"), self.config.rms_norm_eps)
    gate, up = h @ self._get(i, "mlp", "gate_proj", "kernel"), h @ self._get(i, "mlp", "up_proj", "kernel")
    return (gate / (1 + np.exp(-gate)) * up) @ self._get(i, "mlp", "down_proj", "kernel")

  def _project(self, i, name, h, positions, heads):
    out = (h @ self._get(i, "self_attn", name, "kernel")).reshape(len(h), heads, self.config.head_dim)
    return out if positions is None else _rope(out, positions, self.config.rope_theta)

  def __call__(self, embeds: np.ndarray) -> np.ndarray:
    """embeds [T, D] (prompt then generated part) -> float64 logits of the generated part [G, V]."""
    cfg, p = self.config, self.p
    refresh_prompt = self.calls % self.prompt_refresh == 0
    refresh_gen = self.calls % self.refresh == 0
    self.calls += 1
    x = np.asarray(embeds, np.float64)
    positions = np.arange(len(x))
    xp, xg = x[:p].copy(), x[p:].copy()
    gen_positions = positions[p:]
    count = int(len(xg) * self.ratio)
    heads, kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
    for i in range(cfg.num_hidden_layers):
      old = self.cache[i]
      norm = lambda a: _rms(a, self._get(i, "input_layernorm", "scale"), cfg.rms_norm_eps)
      hg = norm(xg)
      if refresh_prompt:
        hp = norm(xp)
        qp = self._project(i, "q_proj", hp, positions[:p], heads)
        kp, vp = self._project(i, "k_proj", hp, positions[:p], kv_heads), self._project(i, "v_proj", hp, None, kv_heads)
      else:
        kp, vp = old["k"][:p], old["v"][:p]
      if refresh_gen:
        chosen = np.arange(len(xg))
        kg = self._project(i, "k_proj", hg, gen_positions, kv_heads)
        vg = self._project(i, "v_proj", hg, None, kv_heads)
      else:
        vg = self._project(i, "v_proj", hg, None, kv_heads)
        cached_v = old["v"][p:]
        a, b = vg.reshape(len(vg), -1), cached_v.reshape(len(vg), -1)
        similarity = (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))
        chosen = np.argsort(similarity, kind="stable")[:count]
        kg = old["k"][p:].copy()
        kg[chosen] = self._project(i, "k_proj", hg[chosen], gen_positions[chosen], kv_heads)
      qg = self._project(i, "q_proj", hg[chosen], gen_positions[chosen], heads)
      keys, values = np.concatenate([kp, kg]), np.concatenate([vp, vg])
      attn_g = np.zeros_like(xg) if refresh_gen else old["attn"][p:].copy()
      attn_g[chosen] = self._attend(i, qg, keys, values) if len(chosen) else attn_g[chosen]
      attn_p = self._attend(i, qp, keys, values) if refresh_prompt else old["attn"][:p]
      xg = xg + attn_g
      if refresh_prompt:
        xp = xp + attn_p
        mlp_p = self._mlp(i, xp)
        xp = xp + mlp_p
      else:
        mlp_p = old["mlp"][:p]
      mlp_g = np.zeros_like(xg) if refresh_gen else old["mlp"][p:].copy()
      mlp_g[chosen] = self._mlp(i, xg[chosen]) if len(chosen) else mlp_g[chosen]
      xg = xg + mlp_g
      self.cache[i] = {"k": keys, "v": values, "attn": np.concatenate([attn_p, attn_g]),
                       "mlp": np.concatenate([mlp_p, mlp_g])}
    xg = _rms(xg, np.asarray(self.params["norm"]["scale"], np.float64), cfg.rms_norm_eps)
    return xg @ np.asarray(self.params["lm_head"]["kernel"], np.float64)

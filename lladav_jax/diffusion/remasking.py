"""One step's choice at the masked positions of the current block: tokens, confidences, commits.

Randomness contract (the tests rely on it; it makes each row independent of its batch): every row
has its own key, and its n-th model evaluation uses `step_keys(row_key, n)`: the token key draws
Gumbel noise of shape [block_length, vocab_limit], the remask key ("random" remasking) uniforms of
shape [block_length].
"""

import jax
import jax.numpy as jnp


def step_keys(row_key: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(token key, remask key) of one row's `step`-th model evaluation."""
  key = jax.random.fold_in(row_key, step)
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def guide(cond: jax.Array, uncond: jax.Array, scale: float) -> jax.Array:
  """Classifier-free guidance as upstream: un + (scale + 1) (cond - un)."""
  return uncond + (scale + 1.0) * (cond - uncond)


def suppress(logits: jax.Array, masked: jax.Array, ids: tuple[int, ...]) -> jax.Array:
  """logits: float32 [B, T, V]; masked: bool [B, T]. -inf for `ids` at masked positions."""
  if not ids:
    return logits
  forbidden = jnp.zeros(logits.shape[-1], bool).at[jnp.asarray(ids)].set(True)
  return jnp.where(masked[..., None] & forbidden, -jnp.inf, logits)


def choose_tokens(logits: jax.Array, temperature: float, token_keys: jax.Array) -> jax.Array:
  """logits: float32 [B, T, V]; token_keys: [B] -> int32 [B, T].

  Gumbel-max: argmax(logits / T + Gumbel). Upstream computes exp(logits) / (-log u)^T in float64,
  whose argmax is the same; the log-space form cannot overflow and needs no float64.
  """
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  noise = jax.vmap(lambda k: jax.random.gumbel(k, logits.shape[1:], jnp.float32))(token_keys)
  return jnp.argmax(logits / temperature + noise, axis=-1).astype(jnp.int32)


def confidence(logits: jax.Array, tokens: jax.Array, remasking: str, remask_keys: jax.Array) -> jax.Array:
  """float32 [B, T]: log-probability of the chosen token under the un-noised logits, or a uniform
  draw for "random". Ranking by log p equals upstream's ranking by float64 p, without underflow."""
  if remasking == "random":
    return jax.vmap(lambda k: jax.random.uniform(k, tokens.shape[1:], jnp.float32))(remask_keys)
  log_probs = jax.nn.log_softmax(logits, axis=-1)
  return jnp.take_along_axis(log_probs, tokens[..., None], axis=-1)[..., 0]


def _ranks(score: jax.Array, eligible: jax.Array) -> jax.Array:
  """int32 [B, T]: 0 for the best eligible position, then 1, ...; ties go to the lower index."""
  keyed = jnp.where(eligible, score, -jnp.inf)
  order = jnp.argsort(-keyed, axis=-1, stable=True)
  return jnp.argsort(order, axis=-1, stable=True).astype(jnp.int32)


def select_top(score: jax.Array, eligible: jax.Array, quota: jax.Array) -> jax.Array:
  """bool [B, T]: the `quota` [B] highest-scoring eligible positions (fewer if fewer are eligible)."""
  return eligible & (_ranks(score, eligible) < quota[:, None])


def select_threshold(log_conf: jax.Array, eligible: jax.Array, threshold: float) -> jax.Array:
  """Fast-dLLM threshold rule: every eligible position with p >= threshold, and always the best."""
  ranks = _ranks(log_conf, eligible)
  return eligible & ((ranks == 0) | (jnp.exp(log_conf) >= threshold))


def select_factor(log_conf: jax.Array, eligible: jax.Array, factor: float) -> jax.Array:
  """Fast-dLLM factor rule: the largest n such that the k-th most confident has
  p_k >= 1 - factor / (k + 1) for every k <= n (n >= 1)."""
  ranks = _ranks(log_conf, eligible)
  size = log_conf.shape[-1]
  order = jnp.argsort(ranks, axis=-1)  # position holding rank 0, 1, ...
  sorted_p = jnp.exp(jnp.take_along_axis(jnp.where(eligible, log_conf, -jnp.inf), order, axis=-1))
  k = jnp.arange(1, size + 1, dtype=jnp.float32)
  passes = (sorted_p >= 1.0 - factor / (k + 1.0)) | (k == 1)
  count = jnp.sum(jnp.cumprod(passes.astype(jnp.int32), axis=-1), axis=-1)
  return eligible & (ranks < count[:, None])

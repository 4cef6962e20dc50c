"""One step's choice at the candidate positions: tokens, confidences, commits.

Upstream ranks the candidates by the float64 softmax probability p of each chosen token. In float32,
log p rounds to 0 (p to 1) once the other tokens' mass m = sum_{j != x} exp(l_j - l_x) falls below
about 6e-8, so confident positions would tie. A `Confidence` therefore keeps m itself: log m, which
keeps relative precision however sure the model is, and, where m < 2^-30, float64's own rounding
of 1 + m to steps of 2^-52 (round(m * 2^52)): float64 probabilities tie exactly when those steps are
equal (p = 1 at step 0), and ties go to the lower position, as torch.topk's partial sort gives them.

Randomness contract (the tests rely on it; it makes each row independent of its batch and of which
positions a step scores): every row has its own key; at its n-th model evaluation, with (token key,
remask key) = `step_keys(row_key, n)`, position j of the generated region draws Gumbel noise
gumbel(fold_in(token key, j), [vocab_limit]) and ("random" remasking) the uniform
uniform(fold_in(remask key, j), []).
"""

import math

import flax.struct
import jax
import jax.numpy as jnp

# Below this log m, float64 rounds 1 + m to 1 + k 2^-52 with k < 2^22, an integer float32 holds.
_LOG_FINE = -30 * math.log(2.0)
_STEPS_PER_UNIT = 2.0 ** 52
_COARSE = 2.0 ** 23  # the `steps` of a confidence whose m is not below 2^-30


@flax.struct.dataclass
class Confidence:
  """float32 [B, T] each. log_doubt: log m = log((1 - p) / p), smaller is surer; steps:
  round(m * 2^52) where m < 2^-30 (float64's steps of 1 + m), else _COARSE."""

  log_doubt: jax.Array
  steps: jax.Array

  @property
  def fine(self) -> jax.Array:
    return self.steps < _COARSE

  @property
  def log_doubt_as_float64(self) -> jax.Array:
    """log m after float64's rounding of 1 + m (-inf where p rounds to 1)."""
    return jnp.where(self.fine, jnp.log(self.steps) - math.log(_STEPS_PER_UNIT), self.log_doubt)


def step_keys(row_key: jax.Array, step: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(token key, remask key) of one row's `step`-th model evaluation."""
  key = jax.random.fold_in(row_key, step)
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def position_keys(keys: jax.Array, positions: jax.Array) -> jax.Array:
  """keys [B], positions int32 [T] (generated-region offsets) -> keys [B, T]: fold_in(key, position)."""
  return jax.vmap(lambda key: jax.vmap(lambda j: jax.random.fold_in(key, j))(positions))(keys)


def guide(cond: jax.Array, uncond: jax.Array, scale: float) -> jax.Array:
  """Classifier-free guidance as upstream: un + (scale + 1) (cond - un)."""
  return uncond + (scale + 1.0) * (cond - uncond)


def suppress(logits: jax.Array, masked: jax.Array, ids: tuple[int, ...]) -> jax.Array:
  """logits: float32 [B, T, V]; masked: bool [B, T]. -inf for `ids` at masked positions."""
  if not ids:
    return logits
  forbidden = jnp.zeros(logits.shape[-1], bool).at[jnp.asarray(ids)].set(True)
  return jnp.where(masked[..., None] & forbidden, -jnp.inf, logits)


def choose_tokens(logits: jax.Array, temperature: float, token_keys: jax.Array, positions: jax.Array) -> jax.Array:
  """logits: float32 [B, T, V] at `positions` (int32 [T]); token_keys: [B] -> int32 [B, T].

  Gumbel-max: argmax(logits / T + Gumbel). Upstream computes exp(logits) / (-log u)^T in float64,
  whose argmax is the same; the log-space form cannot overflow and needs no float64.
  """
  if temperature == 0:
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)
  draw = lambda key: jax.random.gumbel(key, logits.shape[-1:], jnp.float32)
  noise = jax.vmap(jax.vmap(draw))(position_keys(token_keys, positions))
  return jnp.argmax(logits / temperature + noise, axis=-1).astype(jnp.int32)


def confidence(logits: jax.Array, tokens: jax.Array, remasking: str, remask_keys: jax.Array,
               positions: jax.Array) -> Confidence:
  """How sure the un-noised logits (float32 [B, T, V] at `positions`) are of `tokens` (int32 [B, T]);
  for "random" remasking a uniform draw u stands in for p, as upstream's."""
  if remasking == "random":
    draw = lambda key: jax.random.uniform(key, (), jnp.float32)
    u = jax.vmap(jax.vmap(draw))(position_keys(remask_keys, positions))
    return Confidence(log_doubt=jnp.log1p(-u) - jnp.log(u), steps=jnp.full(u.shape, _COARSE, jnp.float32))
  chosen = jnp.take_along_axis(logits, tokens[..., None], axis=-1)
  others = jnp.where(jnp.arange(logits.shape[-1]) == tokens[..., None], -jnp.inf, logits - chosen)
  log_doubt = jax.nn.logsumexp(others, axis=-1)
  # The mass summed directly where it is tiny: relative float32 precision for the steps.
  mass = jnp.sum(jnp.exp(jnp.minimum(others, 0.0)), axis=-1)
  fine = log_doubt < _LOG_FINE
  steps = jnp.where(fine, jnp.round(mass * _STEPS_PER_UNIT), _COARSE)
  return Confidence(log_doubt=log_doubt, steps=steps)


def _ranks(conf: Confidence, eligible: jax.Array) -> jax.Array:
  """int32 [B, T]: 0 for the surest eligible position, then 1, ...; ties go to the lower index,
  ineligible positions come last."""
  tier = jnp.where(eligible, jnp.where(conf.fine, 0, 1), 2)
  value = jnp.where(eligible, jnp.where(conf.fine, conf.steps, conf.log_doubt), 0.0)
  position = jnp.broadcast_to(jnp.arange(tier.shape[-1], dtype=jnp.int32), tier.shape)
  order = jax.lax.sort((tier, value, position), dimension=tier.ndim - 1, num_keys=3)[-1]
  return jnp.argsort(order, axis=-1).astype(jnp.int32)


def select_top(conf: Confidence, eligible: jax.Array, quota: jax.Array) -> jax.Array:
  """bool [B, T]: the `quota` [B] surest eligible positions (fewer if fewer are eligible)."""
  return eligible & (_ranks(conf, eligible) < quota[:, None])


def select_threshold(conf: Confidence, eligible: jax.Array, threshold: float) -> jax.Array:
  """Fast-dLLM threshold rule: every eligible position with p >= threshold, and always the surest.
  p >= t is m <= (1 - t) / t, compared in log space so that thresholds near 1 keep their meaning."""
  bound = math.log((1.0 - threshold) / threshold) if threshold < 1.0 else -math.inf
  return eligible & ((_ranks(conf, eligible) == 0) | (conf.log_doubt_as_float64 <= bound))


def select_factor(conf: Confidence, eligible: jax.Array, factor: float) -> jax.Array:
  """Fast-dLLM factor rule: the largest n such that the k-th surest has p_k >= 1 - factor / (k + 1)
  for every k <= n (n >= 1); 1 - p = m / (1 + m) is compared in log space."""
  ranks = _ranks(conf, eligible)
  size = ranks.shape[-1]
  order = jnp.argsort(ranks, axis=-1)  # position holding rank 0, 1, ...
  log_doubt = conf.log_doubt_as_float64
  log_miss = jnp.where(eligible, log_doubt - jax.nn.softplus(log_doubt), jnp.inf)  # log(1 - p)
  sorted_miss = jnp.take_along_axis(log_miss, order, axis=-1)
  k = jnp.arange(1, size + 1, dtype=jnp.float32)
  passes = (sorted_miss <= jnp.log(factor / (k + 1.0))) | (k == 1)
  count = jnp.sum(jnp.cumprod(passes.astype(jnp.int32), axis=-1), axis=-1)
  return eligible & (ranks < count[:, None])

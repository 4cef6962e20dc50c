"""A plain Python/NumPy decode of one row, written from upstream's rules (LLaDA `generate.py`,
LLaDA-V `generate_with_embeds`, Fast-dLLM's threshold/factor rules), for the tests to compare with.

Model access is an oracle (`common.Oracle`: full forward, one row, float64 logits; a caching
oracle also gets the step's place in its block). Random numbers come from the
sampler's documented contract (`remasking.step_keys`); everything else is independent of the code
under test: float64 softmax, argsort-based top-k, and stop scans written as loops.
"""

import dataclasses

import jax
import numpy as np

from lladav_jax.diffusion.remasking import step_keys
from tests.diffusion.common import TOKENS


@dataclasses.dataclass
class RefResult:
  answer: list[int]
  commit_steps: list[int]
  num_steps: int
  mask_commits: int = 0  # how often a [MASK] id was committed (and so stayed a mask)
  earlier_block_commits: int = 0  # commits at positions before the current block (such masks)


def _softmax(x):
  x = x - np.max(x, axis=-1, keepdims=True)
  e = np.exp(x)
  return e / e.sum(axis=-1, keepdims=True)


def _find_stop(tokens, masked, stop_seqs, found, stop, order):
  """Upstream's scan over the committed generated region (order="upstream"), or the earliest."""
  g = len(tokens)

  def first(seq):
    for start in range(g - len(seq) + 1):
      if all(not masked[start + k] and tokens[start + k] == seq[k] for k in range(len(seq))):
        return start
    return None

  if order == "earliest":
    hits = [h for h in (first(s) for s in stop_seqs) if h is not None]
    if hits and (not found or min(hits) < stop):
      return True, min(hits)
    return found, stop
  for seq in stop_seqs:
    hit = first(seq)
    if hit is not None and (not found or hit < stop):
      found, stop = True, hit
    if found:
      break
  return found, stop


def reference_decode(oracle, settings, row_key=None) -> RefResult:
  """settings: resolved SamplerSettings. row_key: the row's jax key (sampling / random remasking).

  Upstream predicts every position and ranks the masked ones before the block's end; a committed
  [MASK] id stays a mask (upstream compares embeddings with [MASK]'s). The dual KV cache computes
  the current block only, so there the candidates are the block's positions.
  """
  s = settings
  g, bl = s.gen_length, s.block_length
  tokens = [TOKENS.mask] * g
  masked = [True] * g
  commit = [-1] * g
  found, stop = False, g
  n_eval = mask_commits = earlier_block_commits = 0
  per_block = s.steps // (g // bl)
  for b in range(g // bl):
    bs, be = b * bl, (b + 1) * bl
    if found and stop <= bs:
      break
    count = sum(masked[bs:be])
    quotas = [count // per_block + (1 if i < count % per_block else 0) for i in range(per_block)]
    rs, re_ = (bs, be) if s.cache == "dual" else (0, g)  # the positions predicted each step
    i = 0
    while True:
      if found and not any(masked[rs:stop]):
        break
      if not any(masked[bs:be]):
        break
      if s.threshold is None and s.factor is None and i >= per_block:
        break
      if i >= bl:  # the sampler bounds threshold / factor decoding at the block's length in steps
        break
      canvas = tokens + list(s.suffix)
      where = dict(block_step=i, block_start=bs)  # only a caching oracle needs to know
      logits = oracle.logits(canvas, **where)[:g]
      if s.cfg_scale > 0:
        un = oracle.logits(canvas, unconditional=True, **where)[:g]
        logits = un + (s.cfg_scale + 1) * (logits - un)
      logits = logits[:, :s.vocab_limit].copy()
      for j in range(g):
        if masked[j]:
          for t in s.suppressed_ids:
            logits[j, t] = -np.inf
      token_key, remask_key = step_keys(row_key, n_eval) if row_key is not None else (None, None)
      region_logits = logits[rs:re_]
      if s.temperature > 0:  # position j draws its own noise: gumbel(fold_in(token key, j), [V])
        noise = np.stack([np.asarray(jax.random.gumbel(jax.random.fold_in(token_key, j), region_logits.shape[-1:]),
                                     np.float64) for j in range(rs, re_)])
        x0 = np.argmax(region_logits / s.temperature + noise, axis=-1)
      else:
        x0 = np.argmax(region_logits, axis=-1)
      if s.remasking == "random":
        conf = np.asarray([jax.random.uniform(jax.random.fold_in(remask_key, j), ()) for j in range(rs, re_)],
                          np.float64)
      else:
        conf = _softmax(region_logits)[np.arange(re_ - rs), x0]
      limit = min(be, stop) if found else be
      candidates = [j for j in range(rs, limit) if masked[j]]
      # Most confident first; ties to the lower position.
      ranked = sorted(candidates, key=lambda j: (-conf[j - rs], j))
      if s.threshold is not None:
        chosen = ranked[:1] + [j for j in ranked[1:] if conf[j - rs] >= s.threshold]
      elif s.factor is not None:
        n = 0
        for k, j in enumerate(ranked, start=1):
          if k > 1 and conf[j - rs] < 1 - s.factor / (k + 1):
            break
          n = k
        chosen = ranked[:n]
      else:
        chosen = ranked[:quotas[i]]
      for j in chosen:
        tokens[j] = int(x0[j - rs])
        masked[j] = tokens[j] == TOKENS.mask
        mask_commits += masked[j]
        earlier_block_commits += j < bs
        commit[j] = n_eval
      found, stop = _find_stop(tokens, masked, s.stop_sequences, found, stop, s.stop_order)
      n_eval += 1
      i += 1
  end = stop if found else g
  return RefResult(answer=tokens[:end] + list(s.suffix), commit_steps=commit[:end] + [-1] * len(s.suffix),
                   num_steps=n_eval, mask_commits=mask_commits, earlier_block_commits=earlier_block_commits)

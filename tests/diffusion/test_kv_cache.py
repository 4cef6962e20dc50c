"""KV caching: the cache-aware forward against a NumPy transformer with stale keys/values, and cached
decodes against the reference loop driven by that NumPy model (refresh = 1 is the exact decode)."""

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.models.llada import LLaDAModel
from lladav_jax.models.lladav import LLaDAV, abstract_params
from lladav_jax.models.lora import LoraConfig
from lladav_jax.train import adapters
from lladav_jax.models.masks import visible_keys_mask
from tests import tiny
from tests.diffusion import common, numpy_llada
from tests.diffusion.numpy_dllm_cache import NumpyDLLMCache
from tests.diffusion.reference import reference_decode

TEXT = common.CONFIG.text
PROMPT = [1, 7, 30, 31, 32, 9]


def _lm_params():
  return common.params()["params"]["language_model"]


def _unstacked(tree):
  """Scanned layer params -> layers_0..layers_N (the loop layout)."""
  out = {}
  for key, value in tree.items():
    if key == "layers":
      for i in range(TEXT.num_hidden_layers):
        out[f"layers_{i}"] = jax.tree_util.tree_map(lambda x: x[i], value)
    else:
      out[key] = value
  return out


@pytest.mark.parametrize("compute", [tiny.F32, tiny.F32_LOOP], ids=["scan", "loop"])
def test_cached_window_forward_matches_numpy_with_stale_keys(compute):
  rng = np.random.default_rng(0)
  length, start, width = 14, 6, 5  # recompute positions [6, 11) against a cache of 14 positions
  then = rng.standard_normal((length, TEXT.hidden_size)).astype(np.float32)
  now = then.copy()
  now[start:start + width] = rng.standard_normal((width, TEXT.hidden_size))
  now[12] = rng.standard_normal(TEXT.hidden_size)  # changed outside the window: must stay unseen
  positions = np.arange(length) + 3
  valid = np.ones(length, bool)
  valid[2] = False  # a padding key
  lm = _lm_params() if compute.scan_layers else _unstacked(_lm_params())
  model = LLaDAModel(TEXT, compute)
  variables = {"params": lm}

  def hidden(embeds, pos, mask, cache):
    return model.apply(variables, embeds, pos, mask, cache, method=LLaDAModel.hidden_states)

  full_mask = visible_keys_mask(jnp.asarray(valid)[None], length)
  _, cache = jax.jit(hidden)(jnp.asarray(then)[None], jnp.asarray(positions)[None], full_mask, None)
  assert cache.key.shape == (TEXT.num_hidden_layers, 1, length, TEXT.num_key_value_heads, TEXT.head_dim)
  window = slice(start, start + width)
  outside = np.ones(length, bool)
  outside[window] = False
  mask = visible_keys_mask(jnp.asarray(np.concatenate([valid & outside, np.ones(width, bool)]))[None], width)
  h, _ = jax.jit(hidden)(jnp.asarray(now[window])[None], jnp.asarray(positions[window])[None], mask, cache)
  got = np.asarray(model.apply(variables, h, method=LLaDAModel.logits))[0]
  recompute = ~outside
  expected = numpy_llada.forward(_lm_params(), TEXT, now, positions, valid, stale=(then, recompute))[window]
  np.testing.assert_allclose(got, expected, atol=2e-4, rtol=1e-4)  # float32 vs float64, 2 layers
  # The stale keys matter: the exact forward of `now` differs.
  exact = numpy_llada.forward(_lm_params(), TEXT, now, positions, valid)[window]
  assert np.abs(exact - expected).max() > 1e-2


class CachedOracle:
  """The reference's model access as a KV cache sees it: full forwards at refreshes, otherwise
  the NumPy model with the keys/values of the last refresh outside the recomputed window."""

  def __init__(self, sample, settings):
    assert sample.num_crops == 0, "text prompts only"
    self.settings = settings
    self.table = np.asarray(_lm_params()["embed_tokens"]["embedding"], np.float64)
    self.prompt = list(sample.input_ids)
    self.then = {}

  def logits(self, ids, unconditional=False, block_step=None, block_start=None):
    s, p = self.settings, len(self.prompt)
    prompt = [common.TOKENS.mask] * p if unconditional else self.prompt
    embeds = self.table[np.asarray(prompt + list(ids))]
    positions = np.arange(len(embeds))
    valid = np.ones(len(embeds), bool)
    refresh = block_step == 0 if s.refresh is None else block_step % s.refresh == 0
    if refresh:
      self.then[unconditional] = embeds
      return numpy_llada.forward(_lm_params(), TEXT, embeds, positions, valid)[p:]
    recompute = np.zeros(len(embeds), bool)
    if s.cache == "prefix":
      recompute[p:] = True
    else:
      recompute[p + block_start:p + block_start + s.block_length] = True
    out = numpy_llada.forward(_lm_params(), TEXT, embeds, positions, valid,
                              stale=(self.then[unconditional], recompute))
    out[~recompute] = np.nan  # the reference must not read rows the cache does not compute
    return out[p:]


class DLLMCacheOracle:
  """The reference's model access under dLLM-Cache: the NumPy re-statement, one call per evaluation."""

  def __init__(self, sample, settings):
    assert sample.num_crops == 0 and settings.cfg_scale == 0, "text prompts, no guidance"
    self.table = np.asarray(_lm_params()["embed_tokens"]["embedding"], np.float64)
    self.prompt = list(sample.input_ids)
    self.model = NumpyDLLMCache(_lm_params(), TEXT, len(self.prompt), settings.refresh, settings.prompt_refresh,
                                settings.transfer_ratio)

  def logits(self, ids, block_step=None, block_start=None):
    return self.model(self.table[np.asarray(self.prompt + list(ids))])


def _ours(samples, settings, seed=0, model=common.MODEL, params=None):
  answers, trace = generate(model, common.params() if params is None else params, samples, settings, seed=seed)
  return [list(a) for a in answers], trace


def _adapted():
  """The test model with LoRA adapters on every language-tower layer, their B random (not zero), so
  that a path that ignored them would decode otherwise."""
  lora = LoraConfig(rank=4, alpha=8.0)
  model = LLaDAV(common.CONFIG, dataclasses.replace(common.MODEL.compute, lora=lora))
  base = jax.device_put(jax.device_get(common.params()["params"]))  # a copy: attach donates its base
  params = jax.device_get(adapters.attach(base, nn.unbox(abstract_params(model)), None, lora, seed=3))
  rng = np.random.default_rng(0)
  flat = traverse_util.flatten_dict(params)
  flat = {k: rng.normal(0, 0.3, v.shape).astype(v.dtype) if k[-1] == "lora_b" else v for k, v in flat.items()}
  return model, {"params": traverse_util.unflatten_dict(flat)}


STALE_CASES = {
    "prefix_block_starts": SamplerSettings(gen_length=12, steps=8, block_length=6, cache="prefix"),
    "dual_every_3": SamplerSettings(gen_length=16, steps=16, block_length=8, cache="dual", refresh=3),
    "dual_threshold_cfg": SamplerSettings(gen_length=8, steps=2, block_length=4, cache="dual",
                                          threshold=0.2, cfg_scale=0.5),
}


# Evaluations 0..7: both parts refreshed at 0; the generated part at 3 and 6; the prompt alone at 5.
# The transfer picks as many positions as a step commits (or more): at least as many values moved,
# so no exact ties among unchanged ones (cosine 1) decide which are recomputed.
DLLM_CASES = {
    "transfer": SamplerSettings(gen_length=16, steps=8, block_length=8, cache="dllm", refresh=3,
                                prompt_refresh=5, transfer_ratio=0.125),
    "no_transfer": SamplerSettings(gen_length=12, steps=12, block_length=4, cache="dllm", refresh=3,
                                   prompt_refresh=5, transfer_ratio=0.0),
    "threshold_suffix": SamplerSettings(gen_length=8, steps=8, block_length=8, cache="dllm", refresh=4,
                                        prompt_refresh=3, transfer_ratio=1.0, threshold=0.3, suffix=(9, 8)),
}


@pytest.mark.parametrize("name", list(DLLM_CASES))
def test_dllm_cache_decode_matches_numpy_restatement(name):
  settings = dataclasses.replace(DLLM_CASES[name], stop_sequences=())
  resolved = settings.resolve(common.CONFIG)
  sample = common.text_sample(PROMPT)
  ref = reference_decode(DLLMCacheOracle(sample, resolved), resolved)
  answers, trace = _ours([sample], settings)
  assert answers[0] == ref.answer
  assert list(trace.commit_steps[0]) == ref.commit_steps
  if name == "transfer":  # the cache shows in the tokens: the exact decode and another ratio differ
    assert _ours([sample], dataclasses.replace(settings, cache="none", refresh=None, prompt_refresh=None,
                                               transfer_ratio=None))[0] != answers
    assert _ours([sample], dataclasses.replace(settings, transfer_ratio=1.0))[0] != answers


@pytest.mark.parametrize("name", list(STALE_CASES))
def test_cached_decode_matches_reference_with_stale_keys(name):
  settings = dataclasses.replace(STALE_CASES[name], stop_sequences=())
  sample = common.text_sample(PROMPT)
  ref = reference_decode(CachedOracle(sample, settings.resolve(common.CONFIG)), settings.resolve(common.CONFIG))
  answers, trace = _ours([sample], settings)
  assert answers[0] == ref.answer
  assert list(trace.commit_steps[0]) == ref.commit_steps
  assert int(trace.num_steps[0]) == ref.num_steps
  if name == "dual_every_3":  # the refresh schedule shows in the tokens: another one would differ
    for other in (None, 4):
      assert _ours([sample], dataclasses.replace(settings, refresh=other))[0] != answers


# Refreshing every step: every mode's evaluation is a full one. dLLM-Cache also with its transfer path
# doing all the work: the prompt refreshed every step and every generated position recomputed.
REFRESH_EVERY_STEP = {
    "prefix": dict(cache="prefix", refresh=1),
    "dual": dict(cache="dual", refresh=1),
    "dllm": dict(cache="dllm", refresh=1, prompt_refresh=1),
    "dllm_transfer_all": dict(cache="dllm", refresh=1000, prompt_refresh=1, transfer_ratio=1.0),
}


@pytest.mark.parametrize("mode", ["dllm", "dllm_transfer_all"])
def test_refresh_every_step_is_the_exact_decode_with_adapters(mode):
  """dLLM-Cache computes the layers itself (models/feature_cache.py): the adapters must act there too."""
  model, params = _adapted()
  samples = [common.text_sample(PROMPT), common.text_sample([1, 50, 51])]
  exact = SamplerSettings(gen_length=12, steps=6, block_length=4, stop_sequences=())
  without, _ = _ours(samples, exact)
  want, _ = _ours(samples, exact, model=model, params=params)
  assert want != without, "the adapters change the decode"
  got, _ = _ours(samples, dataclasses.replace(exact, **REFRESH_EVERY_STEP[mode]), model=model, params=params)
  assert got == want


@pytest.mark.parametrize("mode", list(REFRESH_EVERY_STEP))
def test_refresh_every_step_is_the_exact_decode(mode):
  samples = [common.text_sample(PROMPT), common.video_sample([1, 7, common.IMG, 30], frames=1),
             common.text_sample([1, 50, 51])]
  exact = SamplerSettings(gen_length=12, steps=6, block_length=4, stop_sequences=())
  cached = dataclasses.replace(exact, **REFRESH_EVERY_STEP[mode])
  want, want_trace = _ours(samples, exact)
  got, got_trace = _ours(samples, cached)
  assert got == want
  for a, b in zip(got_trace.commit_steps, want_trace.commit_steps):
    np.testing.assert_array_equal(a, b)

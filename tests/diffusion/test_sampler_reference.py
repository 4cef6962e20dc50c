"""The jitted sampler against the plain Python/NumPy reference loop (tests/diffusion/reference.py)."""

import dataclasses

import jax
import numpy as np
import pytest

from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.models import LLaDAV, chunked_attention
from lladav_jax.models.compute import inference_compute
from tests.diffusion import common
from tests.diffusion.reference import reference_decode

PROMPT = [1, 7, 30, 31, 32, 9]


def ours(sample, settings, seed=0, params=None, model=common.MODEL):
  answers, trace = generate(model, params or common.params(), [sample], settings, seed=[seed])
  return list(answers[0]), list(trace.commit_steps[0]), int(trace.num_steps[0]), bool(trace.stopped[0])


def reference(sample, settings, seed=0, params=None):
  oracle = common.Oracle(sample, params or common.params())
  return reference_decode(oracle, settings.resolve(common.CONFIG), jax.random.key(seed))


def assert_same(sample, settings, seed=0, params=None, model=common.MODEL):
  got, steps, num_steps, _ = ours(sample, settings, seed, params, model)
  ref = reference(sample, settings, seed, params)
  assert got == ref.answer
  assert steps == ref.commit_steps
  assert num_steps == ref.num_steps
  return ref


NO_STOP = dict(stop_sequences=())
CASES = {
    "full_length": SamplerSettings(gen_length=16, steps=8, block_length=16, **NO_STOP),
    "blocks": SamplerSettings(gen_length=16, steps=8, block_length=4, **NO_STOP),
    "uneven_quota": SamplerSettings(gen_length=12, steps=5, block_length=12, **NO_STOP),
    "cfg": SamplerSettings(gen_length=8, steps=4, block_length=4, cfg_scale=1.5, **NO_STOP),
    "random_remasking": SamplerSettings(gen_length=12, steps=6, block_length=4, remasking="random", **NO_STOP),
    "temperature": SamplerSettings(gen_length=8, steps=4, block_length=8, temperature=0.8, **NO_STOP),
    "threshold": SamplerSettings(gen_length=12, steps=3, block_length=4, threshold=0.3, **NO_STOP),
    "factor": SamplerSettings(gen_length=12, steps=3, block_length=4, factor=1.0, **NO_STOP),
    "suffix_and_vocab_limit": SamplerSettings(gen_length=8, steps=4, block_length=4, suffix=(40, 41, 5),
                                              vocab_limit=50, **NO_STOP),
}


@pytest.mark.parametrize("name", list(CASES))
def test_matches_reference(name):
  ref = assert_same(common.text_sample(PROMPT), CASES[name], seed=3)
  if name == "full_length":  # a meaningful case: not one token repeated
    assert len(set(ref.answer)) > 3


@pytest.mark.parametrize("name", ["blocks", "cfg", "threshold"])
def test_decoding_default_attention_matches_reference(name, monkeypatch):
  """What generate and eval decode with on CPU ("chunked", in chunks of 8 queries here, the last one
  padded) against the reference driven by the plain attention."""
  monkeypatch.setattr(chunked_attention, "QUERY_CHUNK", 8)
  model = LLaDAV(common.CONFIG, inference_compute("float32"))
  assert model.compute.attention_impl == ("chunked" if jax.default_backend() == "cpu" else "xla")
  sample = common.image_sample([1, 7, common.IMG, 30, 9], [(384, 384)])
  assert_same(sample, CASES[name], seed=3, model=model)


def test_matches_reference_with_an_image_prompt():
  sample = common.image_sample([1, 7, common.IMG, 30, 9], [(384, 384)])
  assert_same(sample, SamplerSettings(gen_length=8, steps=4, block_length=4, **NO_STOP))


def test_stop_sequences_freeze_and_cut_the_answer():
  sample = common.text_sample(PROMPT)
  base = SamplerSettings(gen_length=16, steps=8, block_length=8, **NO_STOP)
  free = reference(sample, base)
  # Until a stop is committed the decode is the same, so a token of the free answer does stop it.
  order = np.argsort(free.commit_steps, kind="stable")
  single = (free.answer[int(order[len(order) // 2])],)
  pair = tuple(free.answer[5:7])
  for stops in ((single,), (pair,), (pair, single)):
    ref = assert_same(sample, dataclasses.replace(base, stop_sequences=stops))
    assert len(ref.answer) < base.gen_length
    got = ours(sample, dataclasses.replace(base, stop_sequences=stops))
    assert got[3]  # reported as stopped


def test_both_stop_order_rules_match_the_reference():
  sample = common.text_sample(PROMPT)
  base = SamplerSettings(gen_length=16, steps=16, block_length=16, **NO_STOP)
  free = reference(sample, base)
  # Stop A sits late and is committed early; stop B sits earlier and is committed later.
  a = int(np.argmin(free.commit_steps[8:])) + 8
  b = int(np.argmax(free.commit_steps[:a]))
  stops = ((free.answer[a],), (free.answer[b],))
  for rule in ("earliest", "upstream"):
    ref = assert_same(sample, dataclasses.replace(base, stop_sequences=stops, stop_order=rule))
    assert len(ref.answer) <= a


def test_special_tokens_are_suppressed_at_masked_positions():
  sample = common.text_sample(PROMPT)
  base = SamplerSettings(gen_length=8, steps=4, block_length=8, suppressed_ids=(), **NO_STOP)
  free = reference(sample, base)
  banned = tuple(sorted(set(free.answer[:4])))
  ref = assert_same(sample, dataclasses.replace(base, suppressed_ids=banned))
  assert not set(ref.answer) & set(banned)
  # The defaults are upstream's ids (EOS, BOS, header ids), taken from the model's config.
  resolved = SamplerSettings().resolve(common.CONFIG)
  assert resolved.suppressed_ids == tuple(sorted((1, 2, 3, 4)))
  assert resolved.stop_sequences == ((common.TOKENS.eot,),)


def mask_predicting_params(like: int = 49):
  """The test model whose head predicts [MASK] wherever it would predict `like` (one of its usual
  answers), a little more strongly."""
  params = jax.tree_util.tree_map(lambda x: x, common.params())
  head = params["params"]["language_model"]["lm_head"]["kernel"]
  params["params"]["language_model"]["lm_head"]["kernel"] = head.at[:, common.TOKENS.mask].set(1.05 * head[:, like])
  return params


@pytest.mark.parametrize("settings", [
    SamplerSettings(gen_length=16, steps=8, block_length=4, **NO_STOP),
    SamplerSettings(gen_length=12, steps=6, block_length=6, temperature=0.7, **NO_STOP),
    SamplerSettings(gen_length=12, steps=3, block_length=4, threshold=0.4, **NO_STOP),
], ids=["blocks", "temperature", "threshold"])
def test_a_committed_mask_id_is_predicted_again(settings):
  params = mask_predicting_params()
  sample = common.text_sample(PROMPT)
  ref = assert_same(sample, settings, seed=5, params=params)
  assert ref.mask_commits > 0  # the case happened: [MASK] was committed and stayed a mask
  assert ref.earlier_block_commits > 0  # and such a mask was filled in a later block


def confident_params(scale: float):
  """The test model with its LM head scaled: most leads of 20-40 nats, where float32 log-probabilities
  are exactly 0 and only float64 probabilities still order the positions."""
  params = jax.tree_util.tree_map(lambda x: x, common.params())
  head = params["params"]["language_model"]["lm_head"]["kernel"]
  params["params"]["language_model"]["lm_head"]["kernel"] = head * scale
  return params


@pytest.mark.parametrize("scale", [8.0, 10.0])
@pytest.mark.parametrize("settings", [
    SamplerSettings(gen_length=16, steps=8, block_length=16, **NO_STOP),
    SamplerSettings(gen_length=16, steps=4, block_length=8, **NO_STOP),
    SamplerSettings(gen_length=16, steps=4, block_length=8, threshold=1 - 1e-9, **NO_STOP),
], ids=["one_block", "blocks", "threshold"])
def test_a_confident_model_commits_in_float64_order(scale, settings):
  params = confident_params(scale)
  sample = common.text_sample(PROMPT)
  assert_same(sample, settings, params=params)
  # The case can fail: at the first step, ranking by float32 log-probabilities (ties to the lower
  # position) picks other positions than float64 probabilities do.
  logits = common.Oracle(sample, params).logits([common.TOKENS.mask] * settings.gen_length)
  logits = logits[:settings.block_length]  # the first block, with the suppressed ids at -inf
  logits[:, list(settings.resolve(common.CONFIG).suppressed_ids)] = -np.inf
  float32_log_p = np.asarray(jax.nn.log_softmax(logits.astype(np.float32), axis=-1)).max(axis=-1)
  z = logits - logits.max(axis=-1, keepdims=True)
  float64_p = 1.0 / np.exp(z).sum(axis=-1)
  quota = settings.block_length * settings.num_blocks // settings.steps
  by_float32 = sorted(range(len(z)), key=lambda j: (-float32_log_p[j], j))[:quota]
  by_float64 = sorted(range(len(z)), key=lambda j: (-float64_p[j], j))[:quota]
  assert by_float32 != by_float64

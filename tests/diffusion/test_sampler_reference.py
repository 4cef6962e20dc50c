"""The jitted sampler against the plain Python/NumPy reference loop (tests/diffusion/reference.py)."""

import dataclasses

import jax
import numpy as np
import pytest

from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from tests.diffusion import common
from tests.diffusion.reference import reference_decode

PROMPT = [1, 7, 30, 31, 32, 9]


def ours(sample, settings, seed=0):
  answers, trace = generate(common.MODEL, common.params(), [sample], settings, seed=[seed])
  return list(answers[0]), list(trace.commit_steps[0]), int(trace.num_steps[0]), bool(trace.stopped[0])


def reference(sample, settings, seed=0):
  oracle = common.Oracle(sample, common.params())
  return reference_decode(oracle, settings.resolve(common.CONFIG), jax.random.key(seed))


def assert_same(sample, settings, seed=0):
  got, steps, num_steps, _ = ours(sample, settings, seed)
  ref = reference(sample, settings, seed)
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

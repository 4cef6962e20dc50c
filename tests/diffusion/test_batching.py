"""Batches of prompts with different lengths and crop counts decode each row as if it were alone."""

import functools

import jax
import numpy as np
import pytest

from lladav_jax.diffusion import sampler
from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.samples import SampleError
from tests.diffusion import common
from tests.diffusion.reference import reference_decode


@functools.lru_cache(maxsize=None)
def mixed_samples():
  return (
      common.text_sample([1, 7, 30, 31, 32, 9]),
      common.video_sample([1, 7, common.IMG, 30], frames=1),  # 1 crop
      common.text_sample([1, 50, 51]),
      common.video_sample([1, 8, common.IMG, 33, 34, 9], frames=3, seed=5),  # 3 crops
  )


SEEDS = [11, 12, 13, 14]
CASES = {
    "greedy_blocks": SamplerSettings(gen_length=8, steps=4, block_length=4, stop_sequences=()),
    "sampled_random_remasking": SamplerSettings(gen_length=8, steps=8, block_length=4, temperature=0.9,
                                                remasking="random", stop_sequences=()),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_row_of_a_mixed_batch_equals_its_reference_decode(name):
  samples = mixed_samples()
  assert len({s.length for s in samples}) == 4 and {s.num_crops for s in samples} == {0, 1, 3}
  settings = CASES[name]
  answers, trace = generate(common.MODEL, common.params(), samples, settings, seed=SEEDS)
  for i, sample in enumerate(samples):
    ref = reference_decode(common.Oracle(sample, common.params()), settings.resolve(common.CONFIG),
                           jax.random.key(SEEDS[i]))
    assert list(answers[i]) == ref.answer, i
    assert list(trace.commit_steps[i]) == ref.commit_steps, i


def test_a_row_alone_equals_the_row_in_a_batch_with_stops_and_parallel_decoding():
  samples = mixed_samples()
  settings = SamplerSettings(gen_length=12, steps=6, block_length=4, threshold=0.25, cache="dual",
                             stop_sequences=((49,), (36, 49)))
  batch, batch_trace = generate(common.MODEL, common.params(), samples, settings, seed=SEEDS)
  for i in (1, 2):
    alone, alone_trace = generate(common.MODEL, common.params(), [samples[i]], settings, seed=[SEEDS[i]],
                                  prompt_bucket=1)
    np.testing.assert_array_equal(alone[0], batch[i])
    np.testing.assert_array_equal(alone_trace.commit_steps[0], batch_trace.commit_steps[i])
    assert alone_trace.num_steps[0] == batch_trace.num_steps[i]
  assert batch_trace.num_steps.min() != batch_trace.num_steps.max()  # rows really finished apart
  assert batch_trace.stopped.any() and not batch_trace.stopped.all()


def test_one_compilation_per_bucket_and_batch_size_chunks():
  settings = SamplerSettings(gen_length=4, steps=2, block_length=4, temperature=0.5, stop_sequences=())
  before = sampler.trace_count(common.MODEL, settings)
  a = [common.text_sample([1, 7, 8]), common.text_sample([1, 7, 8, 9, 10])]
  b = [common.text_sample([1, 20]), common.text_sample([1, 21, 22, 23, 24, 25, 26])]
  first, _ = generate(common.MODEL, common.params(), a, settings, seed=0, prompt_bucket=16)
  generate(common.MODEL, common.params(), b, settings, seed=0, prompt_bucket=16)
  assert sampler.trace_count(common.MODEL, settings) == before + 1
  # Three rows in batches of two: the last batch is padded, so the same program serves both.
  three = a + [b[0]]
  chunked, _ = generate(common.MODEL, common.params(), three, settings, seed=0, prompt_bucket=16,
                        batch_size=2)
  assert sampler.trace_count(common.MODEL, settings) == before + 1
  whole, _ = generate(common.MODEL, common.params(), three, settings, seed=0, prompt_bucket=16)
  for x, y in zip(chunked, whole):
    np.testing.assert_array_equal(x, y)
  np.testing.assert_array_equal(chunked[0], first[0])


def test_a_prompt_that_leaves_no_room_is_an_error_naming_the_sample():
  settings = SamplerSettings(gen_length=64, steps=64, block_length=64)
  short = common.text_sample([1, 2, 3])
  config_limit = common.CONFIG.max_length  # 4096 in the tiny config
  too_long = common.text_sample([7] * (config_limit - 10))
  with pytest.raises(SampleError, match=r"sample 1: prompt of 4086 tokens \+ gen_length 64"):
    generate(common.MODEL, common.params(), [short, too_long], settings)

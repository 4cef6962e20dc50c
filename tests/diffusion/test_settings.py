"""Settings are checked once, with errors that name the culprit."""

import dataclasses

import pytest

import jax.numpy as jnp

from lladav_jax.diffusion.schedule import step_quota
from lladav_jax.diffusion.settings import SamplerSettings
from tests.diffusion import common


@pytest.mark.parametrize("kwargs, message", [
    (dict(gen_length=10, block_length=4), "gen_length 10 is not divisible by block_length 4"),
    (dict(gen_length=12, block_length=4, steps=4), "steps 4 is not divisible by the number of blocks 3"),
    (dict(remasking="top_p"), "remasking 'top_p'"),
    (dict(cache="full"), "cache 'full'"),
    (dict(refresh=0), "refresh must be >= 1"),
    (dict(cache="dual", prompt_refresh=5), "prompt_refresh is a setting of cache 'dllm', not of cache 'dual'"),
    (dict(transfer_ratio=0.5), "transfer_ratio is a setting of cache 'dllm', not of cache 'none'"),
    (dict(cache="dllm", prompt_refresh=0), "prompt_refresh must be >= 1"),
    (dict(cache="dllm", transfer_ratio=1.5), r"transfer_ratio must be in \[0, 1\]"),
    (dict(threshold=0.9, factor=1.0), "threshold and factor are alternatives"),
    (dict(threshold=1.5), r"threshold must be in \(0, 1\]"),
    (dict(temperature=-1.0), "temperature must be >= 0"),
    (dict(vocab_limit=1000), r"vocab_limit 1000 is outside \(0, 96\]"),
    (dict(stop_sequences=((5,), ())), "stop sequence 1 is empty"),
    (dict(stop_sequences=((500,),)), r"stop sequence 0 \(500,\) has ids outside"),
    (dict(suffix=(7, 96)), "suffix"),
    (dict(stop_order="latest"), "stop_order 'latest'"),
])
def test_bad_settings_fail_with_a_clear_error(kwargs, message):
  with pytest.raises(ValueError, match=message):
    SamplerSettings(**kwargs).resolve(common.CONFIG)


def test_defaults_and_limits():
  resolved = SamplerSettings(vocab_limit=6).resolve(common.CONFIG)
  assert resolved.suppressed_ids == (1, 2, 3, 4)  # EOS, BOS, header ids below the limit
  assert SamplerSettings(vocab_limit=3).resolve(common.CONFIG).suppressed_ids == (1, 2)
  assert dataclasses.replace(resolved, vocab_limit=6) == resolved  # resolving is idempotent
  assert resolved.resolve(common.CONFIG) == resolved
  # dLLM-Cache's unset intervals and ratio are those of upstream LLaDA-V's demo.
  dllm = SamplerSettings(cache="dllm", refresh=3).resolve(common.CONFIG)
  assert (dllm.refresh, dllm.prompt_refresh, dllm.transfer_ratio) == (3, 25, 0.25)


def test_quota_schedule_is_upstreams():
  def quotas(count, steps):
    return [int(step_quota(jnp.asarray([count]), steps, jnp.int32(i))[0]) for i in range(steps)]
  # 10 masks over 4 steps: 10 // 4 = 2 each, the first 10 % 4 = 2 steps one more.
  assert quotas(10, 4) == [3, 3, 2, 2]
  assert quotas(3, 5) == [1, 1, 1, 0, 0]

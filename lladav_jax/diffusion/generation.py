"""Host-side entry point: prompts (`samples.Sample`s) in, answers (token ids) and a trace out.

    answers, trace = generate(model, params, samples, settings, seed=0)

Samples of any lengths and crop counts are batched together: prompts are right-padded to a length
bucket (and crops to a crop bucket), so one compiled program serves every batch of that bucket.
"""

import dataclasses
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lladav_jax.diffusion.sampler import program
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import MODEL_INPUT_KEYS, Sample, SampleError, collate


@dataclasses.dataclass(frozen=True)
class Trace:
  """How each answer was decoded (one entry per sample, in input order).

  commit_steps  int32 [n_i] per row, aligned with the returned tokens: the row's step (0-based model
                evaluation) that committed each token; -1 for suffix tokens (given, never masked)
  num_steps     int [N] model evaluations each row took part in
  stopped       bool [N] whether a stop sequence ended the answer
  """

  commit_steps: list[np.ndarray]
  num_steps: np.ndarray
  stopped: np.ndarray


def round_up(value: int, multiple: int) -> int:
  return -(-value // multiple) * multiple if multiple > 1 else value


def max_total_length(model: LLaDAV) -> int:
  """Longest canvas (prompt + answer + suffix): the config's max_length, else the position limit."""
  config = model.config
  return config.max_length if config.max_length is not None else config.text.max_position_embeddings


def row_keys(seed: int | Sequence[int], count: int) -> jax.Array:
  """Row i's key: fold_in(key(seed), i) for an int seed, key(seed[i]) for one seed per row."""
  if isinstance(seed, (int, np.integer)):
    return jax.vmap(lambda i: jax.random.fold_in(jax.random.key(int(seed)), i))(jnp.arange(count))
  seeds = [int(x) for x in seed]
  if len(seeds) != count:
    raise ValueError(f"{len(seeds)} seeds for {count} samples")
  return jax.vmap(jax.random.key)(jnp.asarray(seeds, jnp.uint32))


def check_lengths(model: LLaDAV, samples: Sequence[Sample], settings: SamplerSettings) -> None:
  limit = max_total_length(model)
  extra = settings.gen_length + len(settings.suffix)
  for i, sample in enumerate(samples):
    if sample.length == 0:
      raise SampleError(f"sample {i}: the prompt is empty")
    if sample.length + extra > limit:
      raise SampleError(f"sample {i}: prompt of {sample.length} tokens + gen_length {settings.gen_length} "
                        f"+ suffix {len(settings.suffix)} = {sample.length + extra} exceeds the maximum "
                        f"length {limit}")


def collate_prompts(model: LLaDAV, samples: Sequence[Sample], prompt_bucket: int = 64,
                    crop_bucket: int = 1) -> tuple[dict, jax.Array]:
  """The decode program's prompt inputs: arrays [B, P, ...] with P and the crop count rounded up to
  their buckets, and the real prompt lengths int32 [B]."""
  prompt_len = round_up(max(s.length for s in samples), prompt_bucket)
  crops = round_up(max(s.num_crops for s in samples), crop_bucket)
  batch = collate([[s] for s in samples], prompt_len, crops, model.config)
  prompt = {k: jnp.asarray(batch[k]) for k in MODEL_INPUT_KEYS}
  return prompt, jnp.asarray([s.length for s in samples], jnp.int32)


def generate(model: LLaDAV, params, samples: Sequence[Sample], settings: SamplerSettings, *,
             seed: int | Sequence[int] = 0, prompt_bucket: int = 64, crop_bucket: int = 1,
             batch_size: int | None = None) -> tuple[list[np.ndarray], Trace]:
  """Decodes an answer for every sample; returns (token ids per sample, Trace).

  samples: prompts with image placeholders expanded (`build_sample`); their labels are ignored.
  Each answer is the generated region cut before the first stop sequence, followed by the suffix.
  seed: an int (row i uses fold_in(key(seed), i)) or one seed per sample; only sampling
    (temperature > 0) and random remasking use it. A row's answer does not depend on the others.
  batch_size: decode in batches of this many rows (the last one padded), so that every batch has
    the same shape; default: all samples in one batch.
  """
  if not samples:
    return [], Trace([], np.zeros(0, np.int64), np.zeros(0, bool))
  settings = settings.resolve(model.config)
  check_lengths(model, samples, settings)
  keys = row_keys(seed, len(samples))
  run = program(model, settings)
  size = len(samples) if batch_size is None else int(batch_size)
  if size < 1:
    raise ValueError(f"batch_size must be >= 1, got {batch_size}")
  answers, commit_steps, num_steps, stopped = [], [], [], []
  for lo in range(0, len(samples), size):
    chunk = list(samples[lo:lo + size])
    chunk_keys = keys[lo:lo + size]
    real = len(chunk)
    if real < size:  # pad with copies of the first row so that every batch has one shape
      chunk += [chunk[0]] * (size - real)
      chunk_keys = jnp.concatenate([chunk_keys, jnp.broadcast_to(chunk_keys[:1], (size - real,))])
    prompt, lengths = collate_prompts(model, chunk, prompt_bucket, crop_bucket)
    result = jax.device_get(run(params, prompt, lengths, chunk_keys))
    for r in range(real):
      stop = int(result.stop[r])
      answer = np.concatenate([result.tokens[r, :stop], np.asarray(settings.suffix, np.int32)])
      answers.append(answer.astype(np.int32))
      commit_steps.append(np.concatenate([result.commit_step[r, :stop],
                                          np.full(len(settings.suffix), -1, np.int32)]))
      num_steps.append(int(result.steps[r]))
      stopped.append(stop < settings.gen_length)
  return answers, Trace(commit_steps, np.asarray(num_steps), np.asarray(stopped))

"""Decoding bucketed batches on the device mesh, across processes.

Every process runs the same jitted decode on a global batch: process p prepares only its own rows
(decodes their images, builds their crops), the rows become one global array sharded over the
mesh's batch axes, and the answers are gathered so that process 0 can score and write them. A row
whose image or video turns out to be undecodable is replaced by a one-token filler row and reported.
"""

import collections
import dataclasses
import functools

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from PIL import Image

from lladav_jax import multihost, sharding
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.diffusion import sampler
from lladav_jax.diffusion.settings import SamplerSettings, decoding_settings
from lladav_jax.eval.bucketing import Batch, Prompt
from lladav_jax.eval.tasks.base import Decoding
from lladav_jax.images import ImageDecodeError, load_image
from lladav_jax.images.crops import inference_visuals, video_placeholder_visuals, video_visual
from lladav_jax.images.loading import to_rgb
from lladav_jax.images.video import VideoSettings, decode_frames
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import MODEL_INPUT_KEYS, Sample, SampleError, build_sample, collate

# Traces (compilations) of each evaluation program; tests read it to count compiled shapes.
TRACE_COUNTS: collections.Counter = collections.Counter()
_MESSAGE_BYTES = 512


def task_settings(decoding: Decoding, tokenizer: Tokenizer, eot_id: int, *, stop_order: str = "upstream",
                  **changes) -> SamplerSettings:
  """Sampler settings for a task as upstream's lmms-eval wrapper decodes it (`decoding_settings`: the
  task's stop strings, then `<|eot_id|>`). `changes` set any other field (e.g. cache="dual")."""
  return decoding_settings(tokenizer, eot_id, gen_length=decoding.gen_length, steps=decoding.steps,
                           block_length=decoding.block_length, stops=decoding.stops, stop_order=stop_order,
                           **changes)


def answer_text(tokenizer: Tokenizer, tokens, *, drop_final_period: bool = True) -> str:
  """The answer as upstream's wrapper returns it: special tokens skipped, one trailing "." dropped
  (its `generate_until`; not its multi-round generation), then stripped."""
  text = tokenizer.decode([int(t) for t in tokens], skip_special_tokens=True)
  if drop_final_period and text.endswith("."):
    text = text[:-1]
  return text.strip()


@functools.lru_cache(maxsize=64)
def _program(config, compute, settings: SamplerSettings, seed: int):
  model = LLaDAV(config, compute)
  key = (config, compute, settings, seed)

  def run(params, prompt, prompt_lengths, record_indices):
    TRACE_COUNTS[key] += 1
    # A row's random key depends on its record only, so its answer does not depend on its batch.
    keys = jax.vmap(lambda i: jax.random.fold_in(jax.random.key(seed), i))(record_indices)
    return sampler.decode(model, settings, params, prompt, prompt_lengths, keys)
  return jax.jit(run)


def trace_count() -> int:
  return sum(TRACE_COUNTS.values())


@dataclasses.dataclass(frozen=True)
class RowResult:
  prompt: Prompt
  tokens: np.ndarray  # int32 answer ids, cut before the stop
  steps: int  # model evaluations the row took part in
  stopped: bool
  error: str  # "" when the row was decoded


def realize(prompt: Prompt, config, video_settings: VideoSettings = VideoSettings()) -> Sample:
  """The full sample of a bucketed prompt: images (the planned video frames) decoded, crops and
  feature layouts built."""
  record = prompt.record
  if record.video is not None:
    clip = video_visual(decode_frames(record.video, prompt.frames), config, pool_mode=video_settings.pool_mode)
    visuals = video_placeholder_visuals(clip, video_settings.token_strategy)
  else:
    visuals = inference_visuals([to_rgb(s) if isinstance(s, Image.Image) else load_image(s) for s in record.images],
                                config)
  sample = build_sample(list(prompt.ids), visuals, config, sample_id=f"sample {record.id}")
  if (sample.length, sample.num_crops) != (prompt.length, prompt.crops):
    raise RuntimeError(f"sample {record.id}: planned {prompt.length} tokens / {prompt.crops} crops from the image "
                       f"headers, built {sample.length} / {sample.num_crops}")
  return sample


def default_mesh_and_params(model: LLaDAV, params, mesh: Mesh | None):
  """The given mesh, else one over every device with the batch split along `data`; parameters not yet
  laid out on the mesh's devices are replicated onto them (single process only)."""
  if mesh is None:
    mesh = sharding.create_mesh({"data": -1})
  devices = set(mesh.devices.flat)
  leaves = jax.tree.leaves(params)
  if all(isinstance(x, jax.Array) and x.sharding.device_set == devices for x in leaves):
    return mesh, params
  if jax.process_count() > 1:
    raise ValueError("in a multi-process run, load the parameters onto the mesh "
                     "(load_pretrained(..., mesh=mesh, rules=rules)) before evaluating")
  return mesh, jax.device_put(params, NamedSharding(mesh, PartitionSpec()))


def check_batch_size(mesh: Mesh, rules, batch_size: int) -> None:
  """ValueError unless `batch_size` rows split evenly over the mesh's batch shards."""
  rules = sharding.normalize_rules(rules if rules is not None else sharding.DEFAULT_LOGICAL_AXIS_RULES)
  shards = sharding.batch_shards(mesh, rules)
  if batch_size < 1 or batch_size % shards:
    raise ValueError(f"batch size {batch_size} is not a positive multiple of the {shards} batch shards of the "
                     f"mesh {dict(mesh.shape)}")


class BatchRunner:
  """Runs bucketed batches of `batch_size` rows (the last ones padded with filler rows)."""

  def __init__(self, model: LLaDAV, params, settings: SamplerSettings, mesh: Mesh, rules, batch_size: int,
               seed: int = 0, video_settings: VideoSettings = VideoSettings()):
    self.model, self.params, self.mesh = model, params, mesh
    self.video_settings = video_settings
    self.rules = sharding.normalize_rules(rules if rules is not None else sharding.DEFAULT_LOGICAL_AXIS_RULES)
    self.settings = settings.resolve(model.config)
    self.batch_size = batch_size
    check_batch_size(mesh, self.rules, batch_size)
    self.rows = multihost.process_rows(sharding.batch_sharding(mesh, 1, self.rules), batch_size)
    self.program = _program(model.config, model.compute, self.settings, int(seed))
    self.filler = build_sample([model.config.tokens.bos], [], model.config)

  def _global(self, local: np.ndarray) -> jax.Array:
    target = sharding.batch_sharding(self.mesh, local.ndim, self.rules)
    return jax.make_array_from_process_local_data(target, local, (self.batch_size,) + local.shape[1:])

  def run(self, batch: Batch) -> list[RowResult]:
    lo, hi = self.rows
    samples, errors = [], []
    for r in range(lo, hi):
      sample, error = self.filler, ""
      if r < len(batch.prompts):
        try:
          sample = realize(batch.prompts[r], self.model.config, self.video_settings)
        except (ImageDecodeError, SampleError, OSError, ValueError) as e:
          error = f"{type(e).__name__}: {e}"
      samples.append(sample)
      errors.append(error)
    local = collate([[s] for s in samples], batch.seq_len, batch.max_crops, self.model.config)
    prompt = {k: self._global(local[k]) for k in MODEL_INPUT_KEYS}
    lengths = self._global(np.asarray([s.length for s in samples], np.int32))
    indices = self._global(np.asarray([batch.prompts[r].record.index if r < len(batch.prompts) else 0
                                       for r in range(lo, hi)], np.int32))
    with jax.set_mesh(self.mesh), nn.logical_axis_rules(self.rules):
      result = self.program(self.params, prompt, lengths, indices)
    tokens, stop, steps = (_to_host(x) for x in (result.tokens, result.stop, result.steps))
    messages = _gather_messages(errors, lo, hi, self.batch_size)
    return [RowResult(p, tokens[r, :stop[r]].astype(np.int32), int(steps[r]), bool(stop[r] < tokens.shape[1]),
                      messages[r]) for r, p in enumerate(batch.prompts)]


def _to_host(x: jax.Array) -> np.ndarray:
  if jax.process_count() == 1:
    return np.asarray(jax.device_get(x))
  return np.asarray(multihost_utils.process_allgather(x, tiled=True))


def _gather_messages(local: list[str], lo: int, hi: int, total: int) -> list[str]:
  """Every row's error message (from the process that prepared it), on every process."""
  if jax.process_count() == 1:
    out = [""] * total
    out[lo:hi] = local
    return out
  buffer = np.zeros((total, _MESSAGE_BYTES), np.uint8)
  owned = np.zeros(total, bool)
  for i, message in enumerate(local):
    data = message.encode("utf-8")[:_MESSAGE_BYTES]
    buffer[lo + i, :len(data)] = np.frombuffer(data, np.uint8)
  owned[lo:hi] = True
  buffers = np.asarray(multihost_utils.process_allgather(buffer))
  owners = np.asarray(multihost_utils.process_allgather(owned))
  out = []
  for row in range(total):
    process = int(np.argmax(owners[:, row]))
    out.append(bytes(buffers[process, row]).rstrip(b"\0").decode("utf-8", errors="replace"))
  return out

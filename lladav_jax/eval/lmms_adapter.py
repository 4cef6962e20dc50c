"""lmms-eval model `lladav_jax`: LLaDA-V through the batched JAX sampler (optional extra).

    pip install lmms-eval          # not a dependency of lladav_jax
    lmms-eval --model lladav_jax --model_args pretrained=/ckpt/lladav-8b,batch_size=16 \\
        --tasks mmstar --gen_kwargs '{"gen_length":2,"block_length":2,"gen_steps":2,"think_mode":"no_think"}'

lmms-eval finds the model through the entry point group "lmms_eval.models" (pyproject:
`lladav_jax = "lladav_jax.eval.lmms_adapter:manifest"`); `simple_evaluate(model=LLaDAVJax(...))`
works without it. The requests are answered as upstream's `llava_onevision_llada` wrapper answers
them (the same prompt, think tag, stop strings and clean-up) but in batches: requests with equal
generation kwargs are sorted into bucketed batches and decoded by one jitted program per shape.
A video request (`doc_to_visual` returns file paths) reads its first file's frames as the wrapper
does (`max_frames_num`, `video_decode_backend`'s frame rule, `token_strategy`,
`mm_spatial_pool_mode` in model_args); a list of PIL frames is several images, as there.
Generation only: `loglikelihood` and multi-round generation are not provided.
"""

import json
from typing import Any

try:
  from lmms_eval.api.model import lmms
except ImportError as e:  # pragma: no cover - exercised only without the extra
  raise ImportError("lladav_jax.eval.lmms_adapter needs lmms-eval (pip install lmms-eval)") from e

from PIL import Image

from lladav_jax import cli
from lladav_jax.data.prompts import THINK_TAGS
from lladav_jax.eval import bucketing
from lladav_jax.eval.runner import BatchRunner, answer_text, default_mesh_and_params, task_settings
from lladav_jax.eval.tasks.base import Decoding, Record
from lladav_jax.images.video import VideoSettings

MODEL_NAME = "lladav_jax"


def _int(value, default):
  return default if value is None else int(value)


def decoding_from_kwargs(gen_kwargs: dict) -> tuple[Decoding, dict]:
  """(Decoding, other sampler fields) from lmms-eval generation kwargs, with the upstream wrapper's
  defaults (2 tokens, block 2, 2 steps; `gen_steps` names the steps; `stopping_criteria` a string or
  list; `think_mode`)."""
  gen = _int(gen_kwargs.get("gen_length"), 2)
  steps = _int(gen_kwargs.get("steps", gen_kwargs.get("gen_steps")), 2)
  stops = gen_kwargs.get("stopping_criteria") or ()
  stops = (stops,) if isinstance(stops, str) else tuple(s for s in stops if s != "<|eot_id|>")
  think = gen_kwargs.get("think_mode")
  decoding = Decoding(gen_length=gen, steps=steps, block_length=_int(gen_kwargs.get("block_length"), 2),
                      stops=stops, think=think if think in THINK_TAGS else None)
  extra = {"temperature": float(gen_kwargs.get("temperature") or 0.0), "cfg_scale": float(gen_kwargs.get("cfg") or 0.0),
           "remasking": gen_kwargs.get("remasking") or "low_confidence"}
  return decoding, extra


class LLaDAVJax(lmms):
  """model_args: pretrained (checkpoint), batch_size, dtype, mesh ("data=-1"), stop_order
  ("upstream"), cache / refresh / prompt_refresh / transfer_ratio / threshold (sampler speed-ups), seed,
  tokenizer; for videos the upstream wrapper's max_frames_num (32), video_decode_backend ("decord": its frame rule),
  token_strategy ("single"), mm_spatial_pool_mode ("bilinear") and mm_spatial_pool_stride (2, the
  only stride upstream's video path uses)."""

  def __init__(self, pretrained: str, batch_size: int | str = 16, dtype: str | None = None, mesh: str = "data=-1",
               stop_order: str = "upstream", cache: str = "none", refresh: int | str | None = None,
               prompt_refresh: int | str | None = None, transfer_ratio: float | str | None = None,
               threshold: float | str | None = None, seed: int | str = 0, tokenizer: str | None = None,
               max_frames_num: int | str = 32, video_decode_backend: str = "decord", token_strategy: str = "single",
               mm_spatial_pool_mode: str = "bilinear", mm_spatial_pool_stride: int | str = 2, **kwargs: Any):
    super().__init__()
    from lladav_jax import sharding
    from lladav_jax.checkpoints.pretrained import load_pretrained
    from lladav_jax.models import LLaDAV
    from lladav_jax.models.compute import inference_compute
    if kwargs:
      raise ValueError(f"{MODEL_NAME}: unknown model_args {sorted(kwargs)}")
    if int(mm_spatial_pool_stride) != 2:
      raise ValueError(f"{MODEL_NAME}: mm_spatial_pool_stride {mm_spatial_pool_stride}: upstream pools video frames "
                       "with stride 2 whatever this says")
    self._video = VideoSettings(max_frames=int(max_frames_num), frame_rule=video_decode_backend,
                                token_strategy=token_strategy, pool_mode=mm_spatial_pool_mode)
    dtype = cli.default_dtype(dtype)
    self._mesh = sharding.create_mesh(cli.parse_mesh(mesh))
    self._rules = sharding.DEFAULT_LOGICAL_AXIS_RULES
    config, params = load_pretrained(pretrained, mesh=self._mesh, rules=self._rules, dtype=dtype)
    self._model = LLaDAV(config, inference_compute(dtype))
    self._mesh, self._params = default_mesh_and_params(self._model, {"params": params}, self._mesh)
    self._tokenizer = cli.find_tokenizer(pretrained, tokenizer)
    self._tokenizer.check_token_ids(config.tokens)
    self.batch_size_per_gpu = int(batch_size)
    given = lambda value, kind: None if value in (None, "") else kind(value)
    self._speed = {"cache": cache, "refresh": given(refresh, int), "prompt_refresh": given(prompt_refresh, int),
                   "transfer_ratio": given(transfer_ratio, float), "threshold": given(threshold, float)}
    self._stop_order, self._seed = stop_order, int(seed)

  @property
  def batch_size(self):
    return self.batch_size_per_gpu

  def generate_until(self, requests) -> list[str]:
    """Answers in request order; requests are grouped by their generation kwargs."""
    groups: dict[str, list[int]] = {}
    for i, request in enumerate(requests):
      groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
    answers = [""] * len(requests)
    for key, members in groups.items():
      decoding, extra = decoding_from_kwargs(json.loads(key))
      settings = task_settings(decoding, self._tokenizer, self._model.config.tokens.eot,
                               stop_order=self._stop_order, **extra, **self._speed)
      prompts = [bucketing.probe(self._record(i, requests[i]), self._tokenizer, self._model.config, decoding.think,
                                 video_settings=self._video) for i in members]
      runner = BatchRunner(self._model, self._params, settings, self._mesh, self._rules, self.batch_size,
                           self._seed, self._video)
      for batch in bucketing.bucket_batches(prompts, self.batch_size):
        for row in runner.run(batch):
          if row.error:
            raise ValueError(f"{MODEL_NAME}: request {row.prompt.record.id}: {row.error}")
          answers[row.prompt.record.index] = answer_text(self._tokenizer, row.tokens)
    return answers

  def _record(self, position: int, request) -> Record:
    context, _, doc_to_visual, doc_id, task, split = request.args[:6]
    visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
    record_id = f"{task}/{split}/{doc_id}"
    if visuals and isinstance(visuals[0], str):  # upstream reads the first path as the video
      return Record(position, record_id, context, (), None, video=visuals[0])
    for v in visuals:
      if not isinstance(v, Image.Image):
        raise ValueError(f"{MODEL_NAME}: {task} doc {doc_id} has a {type(v).__name__} visual; only images and video "
                         "paths are supported")
    metadata = request.metadata if isinstance(getattr(request, "metadata", None), dict) else {}
    if visuals and metadata.get("task_type") == "video" and "sample_frames" in metadata:
      # Upstream stacks the sampled frames into one 4-D tensor for its image branch, and its one
      # placeholder then receives the first frame's features alone.
      raise ValueError(f"{MODEL_NAME}: {task} doc {doc_id}: task metadata with task_type video and sample_frames "
                       "is not supported (upstream's wrapper would use the first sampled frame only)")
    return Record(position, record_id, context, tuple(visuals), None)

  def loglikelihood(self, requests):
    raise NotImplementedError(f"{MODEL_NAME} answers generation tasks only (no log-likelihood)")

  def generate_until_multi_round(self, requests):
    raise NotImplementedError(f"{MODEL_NAME} answers single-round generation tasks only")


def manifest():
  """The lmms-eval (>= 0.5) entry-point payload: `lladav_jax` -> LLaDAVJax."""
  from lmms_eval.models.registry_v2 import ModelManifest
  return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.LLaDAVJax")


try:  # lmms-eval releases before the manifest registry: the decorator registry
  from lmms_eval.api.registry import register_model
  register_model(MODEL_NAME)(LLaDAVJax)
except (ImportError, AttributeError):  # pragma: no cover
  pass

"""lmms-eval model `lladav_jax`: LLaDA-V through the batched JAX sampler (optional extra).

    pip install lmms-eval          # not a dependency of lladav_jax
    lmms-eval --model lladav_jax --model_args pretrained=/ckpt/lladav-8b,batch_size=16 \\
        --tasks mmstar --gen_kwargs '{"gen_length":2,"block_length":2,"gen_steps":2,"think_mode":"no_think"}'

lmms-eval finds the model through the entry point group "lmms_eval.models" (pyproject:
`lladav_jax = "lladav_jax.eval.lmms_adapter:manifest"`); `simple_evaluate(model=LLaDAVJax(...))`
works without it. Requests are answered as upstream's `llava_onevision_llada` wrapper answers them:

- `generate_until`: the same prompt, think tag, stop strings and clean-up, but in batches: requests with
  equal generation kwargs are sorted into bucketed batches and decoded by one jitted program per shape.
  A video request (`doc_to_visual` returns file paths) reads its first file's frames as the wrapper
  does (`max_frames_num`, `video_decode_backend`'s frame rule, `token_strategy`,
  `mm_spatial_pool_mode` in model_args); a list of PIL frames is several images, as there.
- `generate_until_multi_round`: round 0 answers the request's context; then the task's
  `doc_to_text(doc, previous_output=..., round_idx=..., previous_round_info=...)` returns the next
  round's visuals and context, a terminal flag and the answers so far, until the flag is set. Each
  round's open requests are decoded as one batch. Upstream's multi-round path hands the generation
  kwargs to its sampler as they are (see `multi_round_decoding`) and keeps the trailing ".".
- `loglikelihood`: upstream's Monte-Carlo estimate of the diffusion loss (`eval/likelihood.py`), `mc_num`
  draws, `batch_size_ppl` per pass, and `suffix_greedy_prediction`'s flag (`is_check_greedy`).
"""

import dataclasses
import json
from typing import Any

try:
  from lmms_eval.api.model import lmms
except ImportError as e:  # pragma: no cover - exercised only without the extra
  raise ImportError("lladav_jax.eval.lmms_adapter needs lmms-eval (pip install lmms-eval)") from e

import jax
from PIL import Image

from lladav_jax import cli
from lladav_jax.data.prompts import THINK_TAGS
from lladav_jax.data.tokenizer import IMAGE_TEXT
from lladav_jax.eval import bucketing
from lladav_jax.eval.likelihood import BATCH_SIZE_PPL, MC_NUM, MonteCarloLoss, greedy_reproduces, scored_sample
from lladav_jax.eval.runner import BatchRunner, answer_text, default_mesh_and_params, task_settings
from lladav_jax.eval.tasks.base import Decoding, Record
from lladav_jax.images.video import VideoSettings

MODEL_NAME = "lladav_jax"
SAMPLER_DEFAULT = 128  # generate_with_embeds' own gen_length / block_length / steps


def _int(value, default):
  return default if value is None else int(value)


def _optional(value, kind):
  """An optional model_args value: None when absent or empty, else `kind(value)`."""
  return None if value in (None, "") else kind(value)


def _flag(value) -> bool:
  return value if isinstance(value, bool) else str(value).strip().lower() in ("1", "true", "yes")


def _stops(gen_kwargs: dict) -> tuple[str, ...]:
  stops = gen_kwargs.get("stopping_criteria") or ()
  return (stops,) if isinstance(stops, str) else tuple(s for s in stops if s != "<|eot_id|>")


def _sampler_fields(gen_kwargs: dict) -> dict:
  """The kwargs `generate_with_embeds` reads besides the lengths. Upstream's wrapper sets "cfg" too,
  but the sampler has no such argument: only `cfg_scale` guides."""
  return {"temperature": float(gen_kwargs.get("temperature") or 0.0),
          "cfg_scale": float(gen_kwargs.get("cfg_scale") or 0.0),
          "remasking": gen_kwargs.get("remasking") or "low_confidence"}


def decoding_from_kwargs(gen_kwargs: dict) -> tuple[Decoding, dict]:
  """(Decoding, other sampler fields) from lmms-eval generation kwargs, with the upstream wrapper's
  defaults (2 tokens, block 2, 2 steps; `gen_steps` names the steps; `stopping_criteria` a string or
  list; `think_mode`)."""
  gen = _int(gen_kwargs.get("gen_length"), 2)
  steps = _int(gen_kwargs.get("steps", gen_kwargs.get("gen_steps")), 2)
  think = gen_kwargs.get("think_mode")
  decoding = Decoding(gen_length=gen, steps=steps, block_length=_int(gen_kwargs.get("block_length"), 2),
                      stops=_stops(gen_kwargs), think=think if think in THINK_TAGS else None)
  return decoding, _sampler_fields(gen_kwargs)


def multi_round_decoding(gen_kwargs: dict) -> tuple[Decoding, dict]:
  """Upstream's multi-round path: the kwargs go to `generate_with_embeds` as they are, so its defaults
  apply (128 tokens, block 128, 128 steps), only `steps` is read (not `gen_steps`), `cfg_scale` (not
  `cfg`), no think tag and no stop string (not even `<|eot_id|>`). More steps than a block has tokens
  cost nothing: like upstream's, the block loop ends once the block is full."""
  # Upstream fails on `stopping_criteria` here (no tokenizer is passed); they are honoured instead.
  decoding = Decoding(gen_length=_int(gen_kwargs.get("gen_length"), SAMPLER_DEFAULT),
                      steps=_int(gen_kwargs.get("steps"), SAMPLER_DEFAULT),
                      block_length=_int(gen_kwargs.get("block_length"), SAMPLER_DEFAULT), stops=_stops(gen_kwargs),
                      think=None)
  return decoding, _sampler_fields(gen_kwargs)


class LLaDAVJax(lmms):
  """model_args: pretrained (checkpoint), dtype, mesh ("data=-1"), stop_order ("upstream"), cache /
  refresh / prompt_refresh / transfer_ratio / threshold (sampler speed-ups), seed, tokenizer; for videos the upstream wrapper's
  max_frames_num (32), video_decode_backend ("decord": its frame rule), token_strategy ("single"),
  mm_spatial_pool_mode ("bilinear") and mm_spatial_pool_stride (2, the only stride upstream's video
  path uses); for `loglikelihood` mc_num (128), batch_size_ppl (32) and is_check_greedy (True), as
  upstream's wrapper names them. batch_size comes from lmms-eval's --batch_size (0.7: not from
  model_args); its --device and --max_batch_size are not used (the mesh places the model)."""

  def __init__(self, pretrained: str, batch_size: int | str = 16, dtype: str | None = None, mesh: str = "data=-1",
               stop_order: str = "upstream", cache: str = "none", refresh: int | str | None = None,
               prompt_refresh: int | str | None = None, transfer_ratio: float | str | None = None,
               threshold: float | str | None = None, seed: int | str = 0, tokenizer: str | None = None,
               max_frames_num: int | str = 32, video_decode_backend: str = "decord", token_strategy: str = "single",
               mm_spatial_pool_mode: str = "bilinear", mm_spatial_pool_stride: int | str = 2,
               mc_num: int | str = MC_NUM, batch_size_ppl: int | str = BATCH_SIZE_PPL,
               is_check_greedy: bool | str = True, device: str | None = None, max_batch_size: int | None = None,
               **kwargs: Any):
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
    self._speed = {"cache": cache, "refresh": _optional(refresh, int),
                   "prompt_refresh": _optional(prompt_refresh, int),
                   "transfer_ratio": _optional(transfer_ratio, float), "threshold": _optional(threshold, float)}
    self._stop_order, self._seed = stop_order, int(seed)
    self._mc = MonteCarloLoss(self._model, self._params, mc_num=int(mc_num), batch_size_ppl=int(batch_size_ppl),
                              vocab_limit=len(self._tokenizer), mesh=self._mesh, rules=self._rules)
    self._check_greedy = _flag(is_check_greedy)

  @property
  def batch_size(self):
    return self.batch_size_per_gpu

  def generate_until(self, requests) -> list[str]:
    """Answers in request order; requests are grouped by their generation kwargs."""
    answers = [""] * len(requests)
    for key, members in _by_kwargs(requests).items():
      decoding, extra = decoding_from_kwargs(json.loads(key))
      records = [self._record(i, requests[i].args[0], requests[i]) for i in members]
      for index, tokens in self._decode(records, decoding, extra).items():
        answers[index] = answer_text(self._tokenizer, tokens)
    return answers

  def generate_until_multi_round(self, requests) -> list[list[str]]:
    """Every round's answer per request, as the task's last `doc_to_text` call returns them (a list:
    lmms-eval 0.7 passes lists through and makes any other value a string)."""
    results: list[list[str]] = [[] for _ in requests]
    for key, members in _by_kwargs(requests).items():
      decoding, extra = multi_round_decoding(json.loads(key))
      contexts = {i: requests[i].args[0] for i in members}
      visuals = {i: None for i in members}  # None: round 0 takes doc_to_visual's
      previous_info = {i: None for i in members}
      open_requests, round_idx = list(members), 0
      while open_requests:
        records = [self._record(i, contexts[i], requests[i], visuals[i]) for i in open_requests]
        answers = self._decode(records, decoding, extra, upstream_eot=False)
        round_idx += 1
        still_open = []
        for i in open_requests:
          _, _, _, doc_to_text, doc_id, task, split = requests[i].args[:7]
          results[i].append(answer_text(self._tokenizer, answers[i], drop_final_period=False))
          visual, context, terminal, round_res, previous_info[i] = doc_to_text(
              self.task_dict[task][split][doc_id], previous_output=list(results[i]), round_idx=round_idx,
              previous_round_info=previous_info[i])
          if round_res is not None:
            results[i] = list(round_res)
          if not terminal:
            contexts[i], visuals[i] = context, visual or []
            still_open.append(i)
        open_requests = still_open
    return results

  def loglikelihood(self, requests) -> list[tuple[float, bool]]:
    """(upstream's Monte-Carlo loss estimate, greedy flag) per request, in request order. The value is
    the loss (lower is likelier), as upstream returns it and lmms-eval's multiple-choice argmin expects."""
    out = []
    for position, request in enumerate(requests):
      args = request.args
      if len(args) == 2:  # lmms-eval's unconditional requests: (context, continuation), no visuals
        (context, continuation), images, name = args, [], f"request {position}"
      else:
        context, target, doc_to_visual, doc_id, task, split = args[:6]
        doc = self.task_dict[task][split][doc_id]
        continuation = target if isinstance(target, str) else target(doc)
        images, name = self._images(doc_to_visual(doc), task, doc_id), f"{task} doc {doc_id}"
      try:
        scored = scored_sample(self._tokenizer, self._model.config, context, continuation, images)
      except ValueError as e:
        raise ValueError(f"{MODEL_NAME}: {name}: {e}") from e
      key = jax.random.fold_in(jax.random.key(self._seed), position)
      loss = self._mc.estimate(scored.full, key)
      greedy = self._check_greedy and greedy_reproduces(self._model, self._params, scored,
                                                        vocab_limit=len(self._tokenizer))
      out.append((loss, bool(greedy)))
    return out

  def _decode(self, records: list[Record], decoding: Decoding, extra: dict, upstream_eot: bool = True) -> dict:
    """{record index: answer token ids}; `upstream_eot=False` drops the `<|eot_id|>` stop that
    upstream's `generate_until` adds (its multi-round path adds none)."""
    settings = task_settings(decoding, self._tokenizer, self._model.config.tokens.eot, stop_order=self._stop_order,
                             **extra, **self._speed)
    if not upstream_eot:
      settings = dataclasses.replace(settings, stop_sequences=settings.stop_sequences[:-1])
    prompts = [bucketing.probe(r, self._tokenizer, self._model.config, decoding.think, video_settings=self._video)
               for r in records]
    runner = BatchRunner(self._model, self._params, settings, self._mesh, self._rules, self.batch_size, self._seed,
                         self._video)
    answers = {}
    for batch in bucketing.bucket_batches(prompts, self.batch_size):
      for row in runner.run(batch):
        if row.error:
          raise ValueError(f"{MODEL_NAME}: request {row.prompt.record.id}: {row.error}")
        answers[row.prompt.record.index] = row.tokens
    return answers

  def _record(self, position: int, context: str, request, visuals=None) -> Record:
    """The request as a record; `visuals` default to its doc_to_visual's."""
    doc_to_visual, doc_id, task, split = (request.args[2], *request.args[-3:])
    if visuals is None:
      visuals = doc_to_visual(self.task_dict[task][split][doc_id]) or []
    record_id = f"{task}/{split}/{doc_id}"
    if visuals and isinstance(visuals[0], str):  # upstream reads the first path as the video
      return Record(position, record_id, context, (), None, video=visuals[0])
    images = self._images(visuals, task, doc_id)
    metadata = request.metadata if isinstance(getattr(request, "metadata", None), dict) else {}
    if images and metadata.get("task_type") == "video" and "sample_frames" in metadata:
      # Upstream stacks the sampled frames into one 4-D tensor for its image branch, and its one
      # placeholder then receives the first frame's features alone.
      raise ValueError(f"{MODEL_NAME}: {task} doc {doc_id}: task metadata with task_type video and sample_frames "
                       "is not supported (upstream's wrapper would use the first sampled frame only)")
    # Upstream reads such a context as a chat, unless it puts image placeholders in front of it.
    if (not images or IMAGE_TEXT in context) and _is_conversation(context):
      raise ValueError(f"{MODEL_NAME}: {task} doc {doc_id}: conversational (JSON) contexts are not supported")
    return Record(position, record_id, context, images, None)

  @staticmethod
  def _images(visuals, task, doc_id) -> tuple:
    for v in visuals or ():
      if not isinstance(v, Image.Image):
        raise ValueError(f"{MODEL_NAME}: {task} doc {doc_id} has a {type(v).__name__} visual; only images are "
                         "supported here")
    return tuple(visuals or ())


def _by_kwargs(requests) -> dict[str, list[int]]:
  """Request positions grouped by their generation kwargs (JSON keys)."""
  groups: dict[str, list[int]] = {}
  for i, request in enumerate(requests):
    groups.setdefault(json.dumps(request.args[1], sort_keys=True, default=str), []).append(i)
  return groups


def _is_conversation(context: str) -> bool:
  """Upstream's wrapper reads a context that parses as a JSON list of {"value": ...} turns as a chat."""
  try:
    turns = json.loads(context)
  except (TypeError, ValueError):
    return False
  return isinstance(turns, list) and all(isinstance(t, dict) and "value" in t for t in turns) and bool(turns)


def manifest():
  """The lmms-eval (>= 0.5) entry-point payload: `lladav_jax` -> LLaDAVJax."""
  from lmms_eval.models.registry_v2 import ModelManifest
  return ModelManifest(model_id=MODEL_NAME, simple_class_path=f"{__name__}.LLaDAVJax")


try:  # lmms-eval releases before the manifest registry: the decorator registry
  from lmms_eval.api.registry import register_model
  register_model(MODEL_NAME)(LLaDAVJax)
except (ImportError, AttributeError):  # pragma: no cover
  pass

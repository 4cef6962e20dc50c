"""The lmms-eval model adapter answers requests as upstream's llava_onevision_llada wrapper would.

lmms-eval is an optional extra that cannot share this project's environment (it pins av < 16, the
project av 18), so unless it is importable the test installs a minimal stand-in of the parts of its
API the adapter uses: `api.model.lmms` (task_dict, rank/world size), `api.instance.Instance`
(`args` = context, gen_kwargs, doc_to_visual, doc_id, task, split), `api.registry.register_model`
and `models.registry_v2.ModelManifest` (0.7.x entry-point registration).
"""

import dataclasses
import functools
import importlib
import sys
import types

import jax
import pytest

from lladav_jax.data.prompts import build_prompt
from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.eval import likelihood, runner
from lladav_jax.images.crops import inference_visuals
from lladav_jax.models import LLaDAV
from lladav_jax.models.compute import inference_compute
from lladav_jax.samples import build_sample
from tests import tiny
from tests.eval import common


def _stand_in() -> dict:
  root = types.ModuleType("lmms_eval")
  api, model, instance, registry = (types.ModuleType(f"lmms_eval.{n}") for n in
                                    ("api", "api.model", "api.instance", "api.registry"))
  models, registry_v2 = types.ModuleType("lmms_eval.models"), types.ModuleType("lmms_eval.models.registry_v2")

  class lmms:  # noqa: N801 - lmms-eval's name
    def __init__(self):
      self._rank, self._world_size, self.task_dict = 0, 1, {}

  @dataclasses.dataclass
  class Instance:
    request_type: str
    arguments: tuple
    idx: int
    metadata: dict = dataclasses.field(default_factory=dict)

    @property
    def args(self):
      return self.arguments

  registered = {}

  def register_model(*names):
    def decorate(cls):
      assert issubclass(cls, lmms)
      registered.update({n: cls for n in names})
      return cls
    return decorate

  @dataclasses.dataclass(frozen=True)
  class ModelManifest:
    model_id: str
    simple_class_path: str | None = None
    chat_class_path: str | None = None

  model.lmms, instance.Instance = lmms, Instance
  registry.register_model, registry.MODEL_REGISTRY = register_model, registered
  registry_v2.ModelManifest = ModelManifest
  return {"lmms_eval": root, "lmms_eval.api": api, "lmms_eval.api.model": model, "lmms_eval.api.instance": instance,
          "lmms_eval.api.registry": registry, "lmms_eval.models": models, "lmms_eval.models.registry_v2": registry_v2}


@pytest.fixture
def lmms_eval(monkeypatch):
  try:
    importlib.import_module("lmms_eval.api.model")
  except ImportError:
    for name, module in _stand_in().items():
      monkeypatch.setitem(sys.modules, name, module)
  monkeypatch.delitem(sys.modules, "lladav_jax.eval.lmms_adapter", raising=False)
  return importlib.import_module("lladav_jax.eval.lmms_adapter")


def test_adapter_matches_the_upstream_wrapper(lmms_eval, sharp_checkpoint, sharp_setup):
  from lmms_eval.api.instance import Instance
  adapter = lmms_eval
  try:  # the decorator registry (it needs HF `evaluate` in real lmms-eval installs)
    from lmms_eval.api.registry import MODEL_REGISTRY
    assert MODEL_REGISTRY["lladav_jax"] is adapter.LLaDAVJax
  except ImportError:
    assert "evaluate" not in sys.modules
  manifest = adapter.manifest()
  module, cls = manifest.simple_class_path.rsplit(".", 1)
  assert getattr(importlib.import_module(module), cls) is adapter.LLaDAVJax

  model = adapter.LLaDAVJax(pretrained=str(sharp_checkpoint), batch_size="4")
  images = [tiny.random_image(24, 16, seed=i) for i in range(3)]
  model.task_dict = {"t": {"test": [{"image": im} for im in images] + [{"image": None}]}}

  def visual(doc):
    return [] if doc["image"] is None else [doc["image"]]
  choice = {"gen_length": 2, "block_length": 2, "gen_steps": 2, "think_mode": "no_think", "until": ["ASSISTANT:"]}
  chart = {"gen_length": 8, "block_length": 8, "gen_steps": 8, "stopping_criteria": ["\n"], "think_mode": "no_think"}
  contexts = [("What is it?\nAnswer with the option's letter.", choice, 0), ("What is in the image?", chart, 1),
              ("<image>\nWhat is it?", choice, 2), ("No image?", choice, 3), ("Yes or no?", chart, 0)]
  requests = [Instance("generate_until", (ctx, dict(kw), visual, doc, "t", "test"), i,
                       metadata={"task": "t", "doc_id": doc, "repeats": 1})
              for i, (ctx, kw, doc) in enumerate(contexts)]
  answers = model.generate_until(requests)

  tiny_model, params, tokenizer = sharp_setup
  expected = []
  for ctx, kw, doc in contexts:
    pictures = visual(model.task_dict["t"]["test"][doc])
    # Upstream: placeholders and the think tag only when the wrapper adds the images itself.
    think = "no_think" if pictures and "<image>" not in ctx else None
    expected.append(common.reference_answer(tiny_model, params, tokenizer, ctx, pictures, kw["gen_length"],
                                            kw["gen_steps"], kw["block_length"], stops=tuple(kw.get("stopping_criteria", ())),
                                            think=think))
  assert answers == expected


def test_video_requests_read_frames_as_the_upstream_wrapper(lmms_eval, checkpoint, setup, tmp_path):
  """doc_to_visual giving a path list is a video (the first path, max_frames_num frames, token_strategy);
  a list of PIL frames stays several images; task metadata asking to sample frames is refused."""
  from lmms_eval.api.instance import Instance
  adapter = lmms_eval
  clip = str(tiny.write_video(tmp_path / "clip.mp4", 9))
  frames = [tiny.random_image(24, 16, seed=i) for i in range(3)]
  model = adapter.LLaDAVJax(pretrained=str(checkpoint), batch_size="2", max_frames_num="3")
  model.task_dict = {"v": {"test": [{"video": [clip, "ignored.mp4"]}, {"frames": frames}]}}

  def visual(doc):
    return doc.get("video") or doc["frames"]
  kwargs = {"gen_length": 2, "block_length": 2, "gen_steps": 2, "think_mode": "no_think"}
  contexts = [("What happens?", 0), ("Which frame?", 1)]
  requests = [Instance("generate_until", (ctx, dict(kwargs), visual, doc, "v", "test"), i,
                       metadata={"task": "v", "doc_id": doc, "repeats": 1}) for i, (ctx, doc) in enumerate(contexts)]
  answers = model.generate_until(requests)

  tiny_model, params, tokenizer = setup
  assert answers == [
      common.reference_video_answer(tiny_model, params, tokenizer, "What happens?", clip, [0, 4, 8], 2, 2, 2),
      common.reference_answer(tiny_model, params, tokenizer, "Which frame?", frames, 2, 2, 2)]

  twice = adapter.LLaDAVJax(pretrained=str(checkpoint), batch_size="2", max_frames_num="2", token_strategy="multiple")
  twice.task_dict = model.task_dict
  assert twice.generate_until(requests[:1]) == [common.reference_video_answer(
      tiny_model, params, tokenizer, "What happens?", clip, [0, 8], 2, 2, 2, placeholders=2)]

  sampled = Instance("generate_until", ("Which frame?", dict(kwargs), visual, 1, "v", "test"), 0,
                     metadata={"task": "v", "doc_id": 1, "repeats": 1, "task_type": "video", "sample_frames": 2})
  with pytest.raises(ValueError, match="sample_frames"):
    model.generate_until([sampled])
  with pytest.raises(ValueError, match="mm_spatial_pool_stride"):
    adapter.LLaDAVJax(pretrained=str(checkpoint), mm_spatial_pool_stride="4")


def _generate(model, params, tokenizer, question, images, gen, steps, block):
  """One decode as upstream's multi-round path runs it: placeholders in front (no think tag) unless the
  context has them, no stop string at all, special tokens skipped, stripped (the "." kept)."""
  ids = build_prompt(tokenizer, question, len(images))
  sample = build_sample(ids, inference_visuals(list(images), model.config), model.config)
  settings = SamplerSettings(gen_length=gen, steps=steps, block_length=block, stop_sequences=(),
                             vocab_limit=len(tokenizer))
  (answer,), _ = generate(model, params, [sample], settings)
  return tokenizer.decode([int(t) for t in answer], skip_special_tokens=True).strip()


def test_multi_round_follows_the_upstream_loop(lmms_eval, sharp_checkpoint, sharp_setup, monkeypatch):
  from lmms_eval.api.instance import Instance
  model = lmms_eval.LLaDAVJax(pretrained=str(sharp_checkpoint), batch_size="2")
  # What reaches the sampler and the clean-up (rarely visible in 4-token answers): no stop, the "." kept.
  stops, cleanups = set(), set()
  monkeypatch.setattr(lmms_eval, "BatchRunner", lambda *a, **k: stops.add(a[2].stop_sequences) or runner.BatchRunner(
      *a, **k))
  monkeypatch.setattr(lmms_eval, "answer_text", lambda *a, **k: cleanups.add(k.get("drop_final_period", True)) or
                      runner.answer_text(*a, **k))
  pictures = [tiny.random_image(24, 16, seed=i) for i in range(2)]
  docs = [{"name": "a", "rounds": 3, "image": pictures[0]}, {"name": "b", "rounds": 1, "image": None},
          {"name": "c", "rounds": 2, "image": pictures[1]}]
  model.task_dict = {"t": {"test": docs}}
  calls = []

  def doc_to_visual(doc):
    return [] if doc["image"] is None else [doc["image"]]

  def doc_to_text(doc, previous_output=None, round_idx=None, previous_round_info=None, lmms_eval_specific_kwargs=None):
    calls.append((doc["name"], list(previous_output), round_idx, previous_round_info))
    # Round 1 of "a" puts the placeholders in the text and shows two images; answers are edited.
    visuals = [pictures[0], pictures[1]] if round_idx == 1 and doc["image"] is not None else doc_to_visual(doc)
    context = ("<image> <image>\n" if len(visuals) == 2 and round_idx == 1 and doc["name"] == "a" else "")
    context += f"Round {round_idx}: you said {previous_output[-1]!r}. Go on."
    return (visuals, context, round_idx >= doc["rounds"], [o.upper() for o in previous_output],
            {"seen": round_idx})

  # gen_steps, think_mode, cfg and until are not read by upstream's multi-round path; steps 8 > 4 tokens.
  kwargs = {"gen_length": 4, "block_length": 4, "steps": 8, "gen_steps": 2, "think_mode": "no_think", "cfg": 3.0,
            "until": ["\n"]}
  requests = [Instance("generate_until_multi_round", (f"Start {d['name']}.", dict(kwargs), doc_to_visual,
                                                      functools.partial(doc_to_text, lmms_eval_specific_kwargs={}),
                                                      i, "t", "test"), 0,
                       metadata={"task": "t", "doc_id": i, "repeats": 1}) for i, d in enumerate(docs)]
  results = model.generate_until_multi_round(requests)
  ours = sorted(calls, key=lambda c: c[0])

  tiny_model, params, tokenizer = sharp_setup
  calls.clear()
  expected = []
  for doc, request in zip(docs, requests):  # llava_onevision_llada.generate_until_multi_round, batch 1
    context, visuals, outputs, info, round_idx = request.args[0], doc_to_visual(doc), [], None, 0
    while True:
      if round_idx:
        visuals, context, terminal, outputs, info = doc_to_text(doc, previous_output=outputs, round_idx=round_idx,
                                                                previous_round_info=info)
        outputs = list(outputs)
        if terminal:
          break
      outputs.append(_generate(tiny_model, params, tokenizer, context, visuals, 4, 8, 4))
      round_idx += 1
    expected.append(outputs)
  assert results == expected
  assert ours == calls  # the same doc_to_text calls, per doc in the same order
  assert [len(r) for r in results] == [3, 1, 2]
  assert len({answer for r in results for answer in r}) > 3  # answers depend on the round's prompt
  assert stops == {()} and cleanups == {False}
  assert [c[3] for c in calls if c[0] == "a"] == [None, {"seen": 1}, {"seen": 2}]


def test_decoding_kwargs(lmms_eval):
  """Upstream's multi-round path hands the kwargs to generate_with_embeds: its defaults, `steps` and
  `cfg_scale` only."""
  decoding, _ = lmms_eval.multi_round_decoding({})
  assert (decoding.gen_length, decoding.steps, decoding.block_length, decoding.stops, decoding.think) == \
         (128, 128, 128, (), None)
  decoding, extra = lmms_eval.multi_round_decoding({"gen_steps": 4, "cfg": 1.0, "cfg_scale": 0.5,
                                                    "think_mode": "think", "stopping_criteria": "\n"})
  assert decoding.steps == 128 and decoding.think is None and decoding.stops == ("\n",)
  assert extra == {"temperature": 0.0, "cfg_scale": 0.5, "remasking": "low_confidence"}
  # generate_until: the wrapper's defaults (2 / 2 / 2) and `gen_steps`; "cfg" reaches no sampler argument.
  decoding, extra = lmms_eval.decoding_from_kwargs({"gen_steps": 4, "gen_length": 8, "block_length": 8, "cfg": 1.0})
  assert (decoding.gen_length, decoding.steps, decoding.block_length) == (8, 4, 8) and extra["cfg_scale"] == 0.0


def test_loglikelihood_is_upstreams_estimate(lmms_eval, sharp_checkpoint, sharp_setup):
  from lmms_eval.api.instance import Instance
  mc = dict(mc_num="8", batch_size_ppl="4")
  model = lmms_eval.LLaDAVJax(pretrained=str(sharp_checkpoint), batch_size="2", seed="5", **mc)
  unchecked = lmms_eval.LLaDAVJax(pretrained=str(sharp_checkpoint), seed="5", is_check_greedy="False", **mc)
  images = [tiny.random_image(24, 16, seed=i) for i in range(3)]
  docs = [{"images": images[:2], "answer": " red"}, {"images": images[1:], "answer": "green"},
          {"images": [], "answer": "blue"}]
  for m in (model, unchecked):
    m.task_dict = {"t": {"test": docs}}

  def doc_to_visual(doc):
    return doc["images"]

  def doc_to_target(doc):
    return doc["answer"]
  contexts = [("What is it?", doc_to_target, 0), ("<image> and <image>: which?", " A", 1), ("Which?", " B", 2)]
  requests = [Instance("loglikelihood", (ctx, target, doc_to_visual, doc, "t", "test"), i,
                       metadata={"task": "t", "doc_id": doc, "repeats": 1}) for i, (ctx, target, doc) in
              enumerate(contexts)]
  requests.append(Instance("loglikelihood", ("", "red"), 0, metadata={"task": "t", "doc_id": 0, "repeats": 1}))
  out = model.loglikelihood(requests)

  base_model, params, tokenizer = sharp_setup
  # The adapter computes as decoding does (models.compute.inference_compute); the values are compared exactly.
  tiny_model = LLaDAV(base_model.config, inference_compute("float32"))
  estimator = likelihood.MonteCarloLoss(tiny_model, params, mc_num=8, batch_size_ppl=4, vocab_limit=len(tokenizer))
  expected = []
  for i, (ctx, target, doc) in enumerate(contexts + [("", "red", None)]):
    pictures = [] if doc is None else docs[doc]["images"]
    answer = target if isinstance(target, str) else target(docs[doc])
    # Upstream: placeholders in front unless the context has them, no think tag, the answer as the
    # assistant turn, every id after the prompt a label.
    question = ctx if not pictures or "<image>" in ctx else " ".join(["<image>"] * len(pictures)) + "\n" + ctx
    prompt = build_sample(build_prompt(tokenizer, question, len(pictures)),
                          inference_visuals(pictures, tiny_model.config), tiny_model.config)
    scored = likelihood.scored_sample(tokenizer, tiny_model.config, ctx, answer, pictures)
    assert scored.prompt.input_ids.tolist() == prompt.input_ids.tolist()
    assert (scored.full.input_ids[:prompt.length] == prompt.input_ids).all()
    loss = estimator.estimate(scored.full, jax.random.fold_in(jax.random.key(5), i))
    expected.append((loss, likelihood.greedy_reproduces(tiny_model, params, scored, vocab_limit=len(tokenizer))))
  assert out == expected
  assert all(loss > 0 for loss, _ in out)
  # A request's draws come from its position in the call; without the check the flag is False.
  assert unchecked.loglikelihood(requests[2:]) == [(loss, False) for loss, _ in model.loglikelihood(requests[2:])]
  with pytest.raises(ValueError, match="t doc 0: continuation '' gives no label ids"):
    model.task_dict["t"]["test"][0]["answer"] = ""
    model.loglikelihood(requests[:1])

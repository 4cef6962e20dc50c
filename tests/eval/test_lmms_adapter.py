"""The lmms-eval model adapter answers requests as upstream's llava_onevision_llada wrapper would.

lmms-eval is an optional extra that cannot share this project's environment (it pins av < 16, the
project av 18), so unless it is importable the test installs a minimal stand-in of the parts of its
API the adapter uses: `api.model.lmms` (task_dict, rank/world size), `api.instance.Instance`
(`args` = context, gen_kwargs, doc_to_visual, doc_id, task, split), `api.registry.register_model`
and `models.registry_v2.ModelManifest` (0.7.x entry-point registration).
"""

import dataclasses
import importlib
import sys
import types

import pytest

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


def test_adapter_matches_the_upstream_wrapper(lmms_eval, checkpoint, setup):
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

  model = adapter.LLaDAVJax(pretrained=str(checkpoint), batch_size="4")
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

  tiny_model, params, tokenizer = setup
  expected = []
  for ctx, kw, doc in contexts:
    pictures = visual(model.task_dict["t"]["test"][doc])
    # Upstream: placeholders and the think tag only when the wrapper adds the images itself.
    think = "no_think" if pictures and "<image>" not in ctx else None
    expected.append(common.reference_answer(tiny_model, params, tokenizer, ctx, pictures, kw["gen_length"],
                                            kw["gen_steps"], kw["block_length"], stops=tuple(kw.get("stopping_criteria", ())),
                                            think=think))
  assert answers == expected
  with pytest.raises(NotImplementedError):
    model.loglikelihood(requests)


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

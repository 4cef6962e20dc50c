"""Batching, resuming and bad images: batch size 1 and 16 decode identically, an interrupted run
resumes to the same results file, unreadable images are reported by sample id."""

import json

import pytest

from lladav_jax.eval import bucketing, evaluate, get_task, runner, task_settings
from lladav_jax.eval.tasks.base import Decoding, Record
from tests.eval import common

SIZES = [(24, 16), (16, 24), None]  # None: a text-only question
WIDE = (300, 120)  # one record with a larger anyres grid



def records(count: int) -> list[Record]:
  out = []
  for i in range(count):
    size = WIDE if i == 4 else SIZES[i % len(SIZES)]
    images = () if size is None else (common.png_bytes(*size, seed=i),)
    out.append(Record(i, f"r{i}", f"What is in the image? {i}", images, ["yes"],
                      {"metric": "exact_match", "options": None, "category": None}))
  return out


def sampled_settings(tokenizer, eot):
  # Several blocks and steps, and sampling: every row draws from its own record's key.
  return task_settings(Decoding(gen_length=4, steps=2, block_length=2), tokenizer, eot, temperature=0.7)


@pytest.mark.slow  # 16 s; batches decode each row as alone at the sampler level too (tests/diffusion/test_batching.py)
def test_batch_size_1_and_16_decode_identically(setup):
  model, params, tokenizer = setup
  task, data = get_task("jsonl"), records(17)
  settings = sampled_settings(tokenizer, model.config.tokens.eot)
  before = runner.trace_count()
  one = evaluate(model, params, tokenizer, task, data, settings=settings, batch_size=1, progress=False, log=None)
  compiled_one = runner.trace_count() - before
  many = evaluate(model, params, tokenizer, task, data, settings=settings, batch_size=16, progress=False, log=None)
  compiled_many = runner.trace_count() - before - compiled_one
  keys = ("prediction", "steps", "score")
  assert [[s[k] for k in keys] for s in one.samples] == [[s[k] for k in keys] for s in many.samples]
  assert len({s["prediction"] for s in one.samples}) > 3  # sampled answers differ between records
  # Programs compile per bucket pair, not per sample: at most 4 prompt shapes here, 17 samples.
  assert compiled_one <= 4 and compiled_many <= 2


class Interrupt(Exception):
  pass


def test_interrupted_run_resumes_to_the_same_results(setup, tmp_path):
  model, params, tokenizer = setup
  task, data = get_task("jsonl"), records(8)
  settings = sampled_settings(tokenizer, model.config.tokens.eot)
  kwargs = dict(settings=settings, batch_size=2, progress=False, log=None)
  full = evaluate(model, params, tokenizer, task, data, output_dir=str(tmp_path / "full"), **kwargs)

  def stop_after(n):
    if n == 2:
      raise Interrupt
  with pytest.raises(Interrupt):
    evaluate(model, params, tokenizer, task, data, output_dir=str(tmp_path / "cut"), after_batch=stop_after, **kwargs)
  log = tmp_path / "cut" / "predictions.jsonl"
  assert len(log.read_text().splitlines()) == 4
  with open(log, "a") as f:
    f.write('{"index": 7, "id": "r7", "predic')  # a line torn by a kill
  decoded = []
  resumed = evaluate(model, params, tokenizer, task, data, output_dir=str(tmp_path / "cut"),
                     after_batch=decoded.append, **kwargs)
  assert len(decoded) == 2  # the 4 samples left, in batches of 2
  assert (tmp_path / "cut" / "results.jsonl").read_bytes() == (tmp_path / "full" / "results.jsonl").read_bytes()
  assert resumed.summary["metrics"] == full.summary["metrics"]
  # The same directory with other settings is refused rather than mixed.
  with pytest.raises(ValueError, match="different settings"):
    evaluate(model, params, tokenizer, task, data, output_dir=str(tmp_path / "cut"),
             **dict(kwargs, settings=task_settings(Decoding(8, 8, 8), tokenizer, model.config.tokens.eot)))


def test_unreadable_images_are_reported_by_sample_id(setup):
  model, params, tokenizer = setup
  good = common.png_bytes(24, 16)
  data = [Record(0, "ok", "Q?", (good,), ["a"], {"metric": "exact_match", "options": None, "category": None}),
          # a PNG whose header is fine but whose pixel data is cut: fails only when decoded
          Record(1, "truncated", "Q?", (good[:60],), ["a"], {"metric": "exact_match", "options": None,
                                                            "category": None}),
          Record(2, "garbage", "Q?", (b"not an image",), ["a"], {"metric": "exact_match", "options": None,
                                                                "category": None})]
  result = evaluate(model, params, tokenizer, get_task("jsonl"), data, batch_size=4, progress=False, log=None)
  failed = {f["id"]: f["error"] for f in result.summary["failed"]}
  assert set(failed) == {"truncated", "garbage"}
  assert "cannot decode image" in failed["truncated"] and "cannot identify image file" in failed["garbage"]
  assert result.summary["num_scored"] == 1 and "prediction" in result.samples[0]
  json.dumps(result.summary)  # JSON-ready


def test_several_images_take_upstreams_evaluation_layout(setup):
  """Upstream's evaluation stacks several images into one 4-D tensor: `num_patches` features each and
  no image newline (its training path, a list, appends the newline)."""
  model, _, tokenizer = setup
  config = model.config
  images = (common.png_bytes(40, 24, seed=1), common.png_bytes(24, 24, seed=2))
  record = Record(0, "two", "Which is larger?", images, ["A"], {"metric": "exact_match", "options": None,
                                                                 "category": None})
  prompt = bucketing.probe(record, tokenizer, config, think=None)
  sample = runner.realize(prompt, config)
  assert int(sample.image_mask.sum()) == 2 * config.vision.num_patches
  assert sample.num_crops == 2


def test_a_decompression_bomb_is_a_failed_sample_not_a_crash(setup, tmp_path):
  """PIL refuses such an image while reading its header (DecompressionBombError): that record fails
  with its id and reason, the others are answered."""
  from tests.data.test_pipeline import _bomb_png
  model, params, tokenizer = setup
  _bomb_png(tmp_path / "bomb.png")
  data = records(3)
  data[1] = Record(1, "bomb", "What is in the image?", (str(tmp_path / "bomb.png"),), ["yes"],
                   {"metric": "exact_match", "options": None, "category": None})
  result = evaluate(model, params, tokenizer, get_task("jsonl"), data, settings=sampled_settings(
      tokenizer, model.config.tokens.eot), batch_size=2, progress=False, log=None)
  failed = [s for s in result.samples if "error" in s]
  assert [s["id"] for s in failed] == ["bomb"] and "too large" in failed[0]["error"]
  assert result.summary["num_scored"] == 2 and result.summary["failed"][0]["id"] == "bomb"

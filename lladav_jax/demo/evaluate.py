"""Held-out accuracy of a trained demo model, per question type, with the batched jitted sampler."""

import collections
import dataclasses
import json
import os
from typing import Sequence

from lladav_jax.checkpoints.adapters import check_adapters, load_adapters
from lladav_jax.checkpoints.pretrained import load_pretrained
from lladav_jax.data.prompts import build_prompt
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.eval import metrics
from lladav_jax.images import load_image
from lladav_jax.images.crops import inference_visuals
from lladav_jax.models import LLaDAV
from lladav_jax.models.compute import inference_compute
from lladav_jax.samples import build_sample

# Answers are one word: a few tokens, then <|eot_id|> (the stop) and EOS padding.
GEN_LENGTH = 4


@dataclasses.dataclass(frozen=True)
class Prediction:
  record_id: str
  question_type: str
  question: str
  answer: str
  predicted: str

  @property
  def correct(self) -> bool:
    return is_match(self.predicted, self.answer)


def is_match(predicted: str, answer: str) -> bool:
  """lmms-eval's exact match (case and punctuation ignored) of the answers without surrounding whitespace."""
  return metrics.exact_match(predicted.strip(), answer.strip()) == 1.0


def sampler_settings(tokenizer: Tokenizer, eot_id: int) -> SamplerSettings:
  return SamplerSettings(gen_length=GEN_LENGTH, steps=GEN_LENGTH, block_length=GEN_LENGTH,
                         stop_sequences=((eot_id,),), vocab_limit=len(tokenizer))


def evaluate(checkpoint: str, records_file: str, image_folder: str, *, system_prompt: str | None = None,
             limit: int | None = None, batch_size: int = 64, dtype: str = "float32",
             adapter: str | None = None) -> list[Prediction]:
  """Answers every record of `records_file` (LLaVA JSON with a `question_type` field), with weights
  and activations in `dtype`; `adapter`: a LoRA run's adapters over `checkpoint`."""
  config, params = load_pretrained(checkpoint, dtype=dtype)
  compute = inference_compute(dtype)
  if adapter:
    compute, params = load_adapters(adapter, check_adapters(adapter, config, compute), compute, params)
  model = LLaDAV(config, compute)
  tokenizer = Tokenizer.from_dir(os.path.join(checkpoint, "tokenizer"))
  tokenizer.check_token_ids(config.tokens)
  with open(records_file) as f:
    records = json.load(f)[:limit]
  samples, questions = [], []
  for record in records:
    question = record["conversations"][0]["value"].replace("<image>", "").strip()
    image = load_image(os.path.join(image_folder, record["image"]))
    ids = build_prompt(tokenizer, question, 1, system_prompt=system_prompt, keep_image_newline=True)
    samples.append(build_sample(ids, inference_visuals([image], config), config, sample_id=record["id"]))
    questions.append(question)
  answers, _ = generate(model, {"params": params}, samples, sampler_settings(tokenizer, config.tokens.eot),
                        batch_size=batch_size)
  return [Prediction(r["id"], r.get("question_type", "all"), q, r["conversations"][1]["value"],
                     tokenizer.decode([int(t) for t in a], skip_special_tokens=True))
          for r, q, a in zip(records, questions, answers)]


def accuracy_by_type(predictions: Sequence[Prediction]) -> dict[str, tuple[int, int]]:
  """{question type: (correct, total)}, types in first-seen order, plus "all"."""
  counts: dict[str, list[int]] = collections.OrderedDict()
  for p in predictions:
    for key in (p.question_type, "all"):
      entry = counts.setdefault(key, [0, 0])
      entry[0] += int(p.correct)
      entry[1] += 1
  counts.move_to_end("all")
  return {k: (v[0], v[1]) for k, v in counts.items()}

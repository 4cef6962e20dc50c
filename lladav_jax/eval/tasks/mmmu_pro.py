"""MMMU-Pro: the standard setting (10 options, the question's `<image N>` references kept in the text)
and the vision setting (question and options are inside one screenshot). Prompts, images and answer
rules are lmms-eval's `mmmu_pro_standard` / `mmmu_pro_vision`; decoding is LLaDA-V's multiple-choice
setting (2 tokens, 2 steps, /no_think).

Neither prompt holds an `<image>`, so the images go in front of the question (several: the evaluation
layout, 729 tokens each). The score is per subject, per MMMU domain (instance level) and overall.
"""

import random

from lladav_jax.eval.choices import mmmu_choice
from lladav_jax.eval.readers import Row
from lladav_jax.eval.tasks.base import (Record, Task, breakdown, images, lettered, mean_score, referenced_images,
                                        string_list, text)
from lladav_jax.eval.tasks.choice import mmmu_domains

# The yaml's post prompt (standard) and the whole text of the vision prompt.
POST_PROMPT = "Answer with the option letter from the given choices directly."


def mmmu_pro_summary(results) -> dict:
  """lmms-eval's `mmmu_pro_aggregate_results`: overall (instance level), per domain and per subject."""
  subjects = breakdown(results, "subject")
  return {"metrics": {"accuracy": mean_score(results)},
          "breakdown": {"domain": mmmu_domains(subjects), "subject": subjects}}


class MMMUProStandard(Task):
  name = "mmmu_pro_standard"
  required_columns = ("id", "question", "options", "answer", "subject", "image_1")
  description = "MMMU-Pro standard (10 options; test)"

  def record(self, row: Row, index: int) -> Record:
    options = string_list(row, "options")
    question = f"{text(row, 'question')}\n{lettered(options)}\n\n{POST_PROMPT}"
    # lmms-eval: the images the prompt (question and options) mentions as <image N>, in name order.
    return Record(index, text(row, "id"), question, referenced_images(row, question), text(row, "answer"),
                  {"options": options, "subject": text(row, "subject")})

  def score(self, record, prediction):
    # MMMU's parsing; with no readable option it guesses, seeded by the id so that reruns agree.
    parsed = mmmu_choice(prediction, record.meta["options"], random.Random(record.id))
    return {"parsed": parsed, "score": float(parsed == record.target)}

  def summarize(self, results):
    return mmmu_pro_summary(results)


class MMMUProVision(Task):
  name = "mmmu_pro_vision"
  required_columns = ("id", "image", "answer", "subject")
  description = "MMMU-Pro vision (question and options in the image; test)"

  def record(self, row, index):
    return Record(index, text(row, "id"), POST_PROMPT, images(row, "image"), text(row, "answer"),
                  {"subject": text(row, "subject")})

  def score(self, record, prediction):
    # lmms-eval takes the whole answer as the choice: right only when it is exactly the letter.
    return {"parsed": prediction, "score": float(prediction == record.target)}

  def summarize(self, results):
    return mmmu_pro_summary(results)

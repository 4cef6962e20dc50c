"""MathVista (testmini) and MathVerse (testmini, vision versions), decoded in think mode.

lmms-eval scores both with a GPT judge (answer extraction; for MathVerse also the comparison). Here
the rule-based stand-ins of `math_answers.py` score them; each result keeps the extraction so that
a judge can be run on the results file later (docs/eval.md).
"""

from lladav_jax.eval import math_answers
from lladav_jax.eval.readers import is_missing
from lladav_jax.eval.tasks.base import Decoding, Record, RecordError, Task, breakdown, images, mean_score, text

_REASON = "First perform reasoning, then finally "
_FORMAT = " at the end in the following format: Answer: xxx."
# MathVista's "reason-first" hints, keyed by (answer type, precision).
_HINTS = {
    ("text", None): _REASON + "select the question from the choices in the following format: Answer: xxx.",
    ("integer", None): _REASON + "answer the question requiring an integer answer and provide the final value, "
                       "e.g., 1, 2, 3," + _FORMAT,
    ("float", 1): _REASON + "answer the question requiring a floating-point number with one decimal place and "
                  "provide the final value, e.g., 1.2, 1.3, 1.4," + _FORMAT,
    ("float", 2): _REASON + "answer the question requiring a floating-point number with two decimal places and "
                  "provide the final value, e.g., 1.23, 1.34, 1.45," + _FORMAT,
    ("list", None): _REASON + "answer the question requiring a Python list as an answer and provide the final "
                    "list, e.g., [1, 2, 3], [1.2, 1.3, 1.4]," + _FORMAT,
}
_CLOSING = "If it is hard to determine, give the closest answer."
_MATHVISTA_GROUPS = ("question_type", "answer_type", "category", "task", "context", "grade", "source", "language",
                     "skills")


def _as_list(value):
  if value is None:
    return None
  return [str(x) for x in (value.tolist() if hasattr(value, "tolist") else value)]


class MathVista(Task):
  name = "mathvista_testmini"
  decoding = Decoding(gen_length=96, steps=48, block_length=96, think="think")
  required_columns = ("pid", "question", "decoded_image", "answer", "question_type", "answer_type")
  description = "MathVista testmini (reason-first prompt; rule-based answer extraction instead of GPT)"

  def record(self, row, index):
    question_type, answer_type = text(row, "question_type"), text(row, "answer_type")
    choices = _as_list(row.values.get("choices"))
    precision = row.values.get("precision")
    precision = None if is_missing(precision) else int(float(precision))
    key = (answer_type, precision if answer_type == "float" else None)
    if question_type == "multi_choice":
      key = ("text", None)
    if key not in _HINTS:
      raise RecordError(f"{row.where()}: no MathVista prompt for answer type {answer_type!r} with precision "
                        f"{precision}")
    question = f"Question: {text(row, 'question')}"
    unit = row.values.get("unit")
    if not is_missing(unit):
      question += f" (Unit: {unit})"
    parts = [question]
    if choices:
      parts.append("\n".join(["Choices:"] + [f"({chr(ord('A') + i)}) {c}" for i, c in enumerate(choices)]))
    parts += [_HINTS[key], _CLOSING]
    meta = {"question_type": question_type, "answer_type": answer_type, "choices": choices, "precision": precision}
    extra = row.values.get("metadata")
    if isinstance(extra, dict):
      meta.update({k: (_as_list(v) if k == "skills" else v) for k, v in extra.items() if k in _MATHVISTA_GROUPS})
    return Record(index, text(row, "pid"), "\n".join(parts), images(row, "decoded_image"), text(row, "answer"), meta)

  def score(self, record, prediction):
    m = record.meta
    extraction = math_answers.mathvista_extract(prediction.strip(), m["question_type"], m["answer_type"],
                                                m["choices"])
    normalized = math_answers.mathvista_normalize(extraction, m["choices"], m["question_type"], m["answer_type"],
                                                  m["precision"])
    return {"extraction": extraction, "parsed": normalized,
            "score": float(math_answers.same_answer(normalized, record.target))}

  def summarize(self, results):
    return {"metrics": {"accuracy": mean_score(results)},
            "breakdown": {g: breakdown(results, g) for g in _MATHVISTA_GROUPS
                          if any(g in r["meta"] for r in results)}}


class MathVerse(Task):
  name = "mathverse_testmini_vision"
  decoding = Decoding(gen_length=64, steps=32, block_length=64, think="think")
  required_columns = ("sample_index", "query_cot", "answer", "question_type", "problem_version", "image")
  description = ("MathVerse testmini vision intensive / dominant / only (pass all three files); rule-based "
                 "judging instead of GPT")

  def record(self, row, index):
    image = row.values.get("image")
    visuals = () if image is None or (isinstance(image, str) and not image.strip()) else images(row, "image")
    extra = row.values.get("metadata") if isinstance(row.values.get("metadata"), dict) else {}
    return Record(index, text(row, "sample_index"), text(row, "query_cot"), visuals, text(row, "answer"),
                  {"question_type": text(row, "question_type"), "problem_version": text(row, "problem_version"),
                   "subfield": extra.get("subfield"), "subject": extra.get("subject")})

  def score(self, record, prediction):
    extraction, correct = math_answers.mathverse_correct(prediction.strip(), record.target,
                                                         record.meta["question_type"])
    return {"extraction": extraction, "score": float(correct)}

  def summarize(self, results):
    return {"metrics": {"accuracy": mean_score(results)},
            "breakdown": {"problem_version": breakdown(results, "problem_version"),
                          "subfield": breakdown(results, "subfield")}}

"""A task defined by its data file: one JSON object per line, so a benchmark needs no code.

    {"id": "q1", "image": "imgs/a.png", "question": "What is shown?", "options": ["a cat", "a dog"],
     "answer": "B", "metric": "choice", "category": "animals"}

Fields: `question` and `answer` (a string, or a list of acceptable strings) are required; `image` is a
path or a list of paths (relative to the file; omit for text-only questions); `options` a list
(lettered A, B, ...) or a {"A": ..., "B": ...} object; `metric` one of METRICS (default "choice"
when there are options, else "exact_match"); `post_prompt` replaces the default instruction after
the question; `category` groups the scores; `id` names the record (default: its line's index).
"""

from lladav_jax.eval import metrics
from lladav_jax.eval.choices import LETTERS, infer_option
from lladav_jax.eval.readers import Row
from lladav_jax.eval.tasks.base import (Decoding, MULTIPLE_CHOICE, Record, RecordError, Task, breakdown, images,
                                        mean_score, text)

METRICS = ("choice", "exact_match", "anls", "relaxed_accuracy")
SHORT_ANSWER = Decoding(gen_length=32, steps=16, block_length=32)
_PROMPTS = {"choice": "\nAnswer with the option's letter from the given choices directly.",
            "exact_match": "\nAnswer the question using a single word or phrase.",
            "anls": "\nAnswer the question using a single word or phrase.",
            "relaxed_accuracy": "\nAnswer the question with a single word."}


class JsonlTask(Task):
  """Generic questions from a JSONL file. Decoding: `decoding` if given, else the multiple-choice
  setting (2/2/2) when every record is scored by "choice", else SHORT_ANSWER (32 tokens, 16 steps)."""

  name = "jsonl"
  required_columns = ("question", "answer")
  description = "generic JSONL questions (choice / exact_match / anls / relaxed_accuracy per record)"

  def __init__(self, decoding: Decoding | None = None):
    self.fixed_decoding = decoding

  def decoding_for(self, records) -> Decoding:
    if self.fixed_decoding is not None:
      return self.fixed_decoding
    if records and all(r.meta["metric"] == "choice" for r in records):
      return MULTIPLE_CHOICE
    return SHORT_ANSWER

  def record(self, row: Row, index: int) -> Record:
    options = row.values.get("options")
    if isinstance(options, list):
      options = {LETTERS[i]: str(o) for i, o in enumerate(options)}
    elif options is not None and not isinstance(options, dict):
      raise RecordError(f"{row.where('options')}: expected a list or an object, got {type(options).__name__}")
    metric = row.values.get("metric") or ("choice" if options else "exact_match")
    if metric not in METRICS:
      raise RecordError(f"{row.where('metric')}: unknown metric {metric!r}; choices: {METRICS}")
    if metric == "choice" and not options:
      raise RecordError(f"{row.where('options')}: metric 'choice' needs options")
    answer = row.values.get("answer")
    answers = [str(a) for a in answer] if isinstance(answer, list) else [text(row, "answer")]
    if not answers:
      raise RecordError(f"{row.where('answer')}: empty answer list")
    if metric == "choice":
      answers = [self._letter(a, options, row) for a in answers]
    question = text(row, "question")
    if options:
      question += "\n" + "\n".join(f"{k}. {v}" for k, v in options.items())
    post = row.values.get("post_prompt")
    question += _PROMPTS[metric] if post is None else str(post)
    visuals = images(row, "image") if row.values.get("image") else ()
    return Record(index, str(row.values.get("id", index)), question, visuals, answers,
                  {"metric": metric, "options": options, "category": row.values.get("category")})

  @staticmethod
  def _letter(answer: str, options: dict, row: Row) -> str:
    if answer in options:
      return answer
    matches = [k for k, v in options.items() if v == answer]
    if len(matches) != 1:
      raise RecordError(f"{row.where('answer')}: {answer!r} is neither an option letter nor one option's text")
    return matches[0]

  def score(self, record, prediction):
    metric, pred = record.meta["metric"], prediction.strip()
    if metric == "choice":
      parsed = infer_option(pred, record.meta["options"])
      return {"parsed": parsed, "score": float(parsed in record.target)}
    if metric == "exact_match":
      return {"score": metrics.exact_match(pred, record.target)}
    if metric == "anls":
      return {"score": metrics.anls(pred, record.target)}
    return {"score": float(any(metrics.relaxed_correctness(pred, a) for a in record.target))}

  def summarize(self, results):
    return {"metrics": {"accuracy": mean_score(results)},
            "breakdown": {"metric": breakdown(results, "metric"), "category": breakdown(results, "category")}}


"""Short-answer benchmarks: ChartQA (relaxed accuracy), DocVQA and InfoVQA val (ANLS), MME (yes/no,
perception and cognition scores). Decoding follows LLaDA-V's evaluation script."""

from collections import defaultdict

from lladav_jax.eval import metrics
from lladav_jax.eval.tasks.base import Decoding, Record, Task, breakdown, images, mean_score, string_list, text

CHARTQA = Decoding(gen_length=16, steps=16, block_length=16, stops=("\n",))
DOCUMENT = Decoding(gen_length=32, steps=16, block_length=32)
SHORT_PROMPT_MME = "Answer the question using a single word or phrase."
REASON_PROMPT = ("Give the reason and then write your final answer in the format 'Answer: X' where X is the "
                 "answer to the question.")


class ChartQA(Task):
  name = "chartqa"
  decoding = CHARTQA
  required_columns = ("question", "answer", "type", "image")
  description = "ChartQA (test; relaxed accuracy, human and augmented splits)"

  def record(self, row, index):
    return Record(index, str(row.values.get("id", index)),
                  f"{text(row, 'question')}\nAnswer the question with a single word.", images(row, "image"),
                  text(row, "answer"), {"split": text(row, "type")})

  def score(self, record, prediction):
    return {"score": float(metrics.relaxed_correctness(prediction.strip(), record.target))}

  def summarize(self, results):
    human = [r for r in results if r["meta"]["split"] == "human_test"]
    augmented = [r for r in results if r["meta"]["split"] != "human_test"]
    return {"metrics": {"relaxed_overall": mean_score(results), "relaxed_human_split": mean_score(human),
                        "relaxed_augmented_split": mean_score(augmented)},
            "breakdown": {"split": breakdown(results, "split")}}


class DocVQA(Task):
  name = "docvqa_val"
  decoding = DOCUMENT
  required_columns = ("questionId", "question", "answers", "image")
  description = "DocVQA (validation; ANLS of the text after 'Answer:')"
  group_column = "question_types"

  def record(self, row, index):
    group = row.values.get(self.group_column)
    if hasattr(group, "tolist"):
      group = group.tolist()
    return Record(index, text(row, "questionId"), f"{text(row, 'question')}\n{REASON_PROMPT}", images(row, "image"),
                  string_list(row, "answers"), {"group": group if isinstance(group, (list, str)) else None})

  def score(self, record, prediction):
    parsed = metrics.parse_final_answer(prediction.strip())
    return {"parsed": parsed, "score": metrics.anls(parsed, record.target)}

  def summarize(self, results):
    return {"metrics": {"anls": mean_score(results), "unparsed": sum(r["parsed"] is None for r in results)},
            "breakdown": {self.group_column: breakdown(results, "group")}}


class InfoVQA(DocVQA):
  name = "infovqa_val"
  description = "InfographicVQA (validation; ANLS of the text after 'Answer:')"
  group_column = "answer_type"


# Every other category (commonsense reasoning, numerical calculation, text translation, code
# reasoning) counts towards the cognition score.
MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark",
                  "artwork", "OCR")


class MME(Task):
  name = "mme"
  required_columns = ("question_id", "question", "answer", "category", "image")
  description = "MME (perception and cognition scores: accuracy + accuracy+ per category, summed)"

  def record(self, row, index):
    question = text(row, "question").strip().replace(" Please answer yes or no.", "")
    return Record(index, text(row, "question_id"), f"{question}\n{SHORT_PROMPT_MME}", images(row, "image"),
                  text(row, "answer").lower().strip().replace(".", ""),
                  {"category": text(row, "category"), "image_id": text(row, "question_id")})

  def score(self, record, prediction):
    label = metrics.mme_label(prediction)
    return {"parsed": label, "score": float(label == record.target)}

  def summarize(self, results):
    # Per category: the mean over images of (accuracy + accuracy+) in percent, where an image's two
    # questions give accuracy = share right and accuracy+ = both right.
    per_image = defaultdict(lambda: defaultdict(list))
    for r in results:
      per_image[r["meta"]["category"]][r["meta"]["image_id"]].append(r["score"])
    categories, incomplete = {}, 0
    for category, by_image in sorted(per_image.items()):
      total = 0.0
      for scores in by_image.values():
        incomplete += len(scores) != 2
        total += 100.0 * sum(scores) / len(scores) + 100.0 * all(scores)
      categories[category] = {"score": total / len(by_image), "count": sum(len(s) for s in by_image.values())}
    perception = sum(v["score"] for c, v in categories.items() if c in MME_PERCEPTION)
    cognition = sum(v["score"] for c, v in categories.items() if c not in MME_PERCEPTION)
    out = {"mme_perception_score": perception, "mme_cognition_score": cognition, "accuracy": mean_score(results)}
    if incomplete:
      out["images_without_two_questions"] = incomplete
    return {"metrics": out, "breakdown": {"category": categories}}


"""Multiple-choice benchmarks: MMBench (en dev), MMStar, SEED-Bench, AI2D, ScienceQA-IMG, RealWorldQA,
MMMU (val). Prompts and answer rules are lmms-eval's for each; decoding is LLaDA-V's multiple-choice
setting (2 tokens, 2 steps, /no_think)."""

import ast
import random
from collections import defaultdict

from lladav_jax.eval import metrics
from lladav_jax.eval.choices import infer_option, mmmu_choice, mmmu_open_answers, mmmu_open_correct
from lladav_jax.eval.readers import Row, is_missing
from lladav_jax.eval.tasks.base import (Record, RecordError, Task, breakdown, images, lettered, mean_score,
                                        referenced_images, string_list, text, value)

LETTER_PROMPT = "Answer with the option's letter from the given choices directly."
SHORT_PROMPT = "Answer the question using a single word or phrase."
CIRCULAR_STRIDE = 1_000_000  # MMBench: index + k * 1e6 is the k-th rotation of question `index`


class MMBench(Task):
  name = "mmbench_en_dev"
  required_columns = ("index", "question", "answer", "image", "A", "B")
  description = "MMBench English dev (circular evaluation)"

  def record(self, row: Row, index: int) -> Record:
    options = {c: str(row.values[c]) for c in "ABCDE"
               if c in row.values and row.values[c] and not is_missing(row.values[c])}
    listing = "There are several options:\n" + "".join(f"{c}. {o}\n" for c, o in options.items())
    query = f"{text(row, 'question')} {listing.rstrip(chr(10))}"
    hint = row.values.get("hint")
    if not is_missing(hint):
      query = f"{hint} {query}"
    number = int(float(value(row, "index")))
    category = row.values.get("category")
    l2 = row.values.get("L2-category", row.values.get("l2-category"))
    return Record(index, str(number), f"{query}\n\n{LETTER_PROMPT}", images(row, "image"), text(row, "answer"),
                  {"group": number % CIRCULAR_STRIDE, "main": number < CIRCULAR_STRIDE, "options": options,
                   "category": None if is_missing(category) else category,
                   "l2_category": None if is_missing(l2) else l2})

  def score(self, record, prediction):
    options = {c: o for c, o in record.meta["options"].items() if c in "ABCD"}
    parsed = infer_option(prediction.strip(), options)
    return {"parsed": parsed, "score": float(parsed == record.target)}

  def summarize(self, results):
    # A question counts only if every rotation of it was answered right (upstream's circular rule);
    # an answer no rule can read counts as wrong (upstream would ask a GPT judge).
    groups = defaultdict(list)
    for r in results:
      groups[r["meta"]["group"]].append(r["score"])
    mains = [dict(r, score=float(all(groups[r["meta"]["group"]]))) for r in results if r["meta"]["main"]]
    return {"metrics": {"accuracy": mean_score(mains), "row_accuracy": mean_score(results),
                        "unparsed": sum(r["parsed"] is None for r in results)},
            "breakdown": {"category": breakdown(mains, "category"),
                          "l2_category": breakdown(mains, "l2_category")}}


class MMStar(Task):
  name = "mmstar"
  required_columns = ("index", "question", "answer", "image", "category", "l2_category")
  description = "MMStar (val)"

  def record(self, row, index):
    question = text(row, "question").strip().replace(" Please answer yes or no.", "")
    return Record(index, text(row, "index"), f"{question}\n{LETTER_PROMPT.rstrip('.')}", images(row, "image"),
                  text(row, "answer"), {"category": text(row, "category"), "l2_category": text(row, "l2_category")})

  def score(self, record, prediction):
    return {"score": metrics.mmstar_match(prediction.strip(), record.target)}

  def summarize(self, results):
    # Macro averages: each L2 category counts once, whatever its size (MMStar's rule).
    by_l2 = breakdown(results, "l2_category")
    l2_of = defaultdict(set)
    for r in results:
      l2_of[r["meta"]["category"]].add(r["meta"]["l2_category"])
    category = {c: {"score": sum(by_l2[l]["score"] for l in ls) / len(ls),
                    "count": sum(by_l2[l]["count"] for l in ls)} for c, ls in sorted(l2_of.items())}
    average = sum(v["score"] for v in by_l2.values()) / len(by_l2) if by_l2 else 0.0
    return {"metrics": {"average": average, "accuracy": mean_score(results)},
            "breakdown": {"category": category, "l2_category": by_l2}}


class SeedBench(Task):
  name = "seedbench"
  required_columns = ("question_id", "question", "answer", "image", "choice_a", "data_type")
  description = "SEED-Bench (image and video questions; seed_image is the image score)"

  def record(self, row, index):
    options = [text(row, f"choice_{c}") for c in "abcd"]
    question = f"{text(row, 'question')}\n{lettered(options)}\n{LETTER_PROMPT}"
    return Record(index, text(row, "question_id"), question, images(row, "image"), text(row, "answer"),
                  {"data_type": text(row, "data_type")})

  def score(self, record, prediction):
    choice = metrics.seed_choice(prediction)
    return {"parsed": choice, "score": float(choice.lower().strip() == record.target.lower().strip())}

  def summarize(self, results):
    by_type = breakdown(results, "data_type")
    out = {f"seed_{t}": v["score"] for t, v in by_type.items()}
    out["seed_all"] = mean_score(results)
    return {"metrics": out, "breakdown": {"data_type": by_type}}


class AI2D(Task):
  name = "ai2d"
  required_columns = ("question", "options", "answer", "image")
  description = "AI2D (test)"

  def record(self, row, index):
    options = string_list(row, "options")
    answer = int(float(value(row, "answer")))
    if not 0 <= answer < len(options):
      raise RecordError(f"{row.where('answer')}: answer {answer} is not one of the {len(options)} options")
    question = f"{text(row, 'question')}\n{lettered(options)}\n{LETTER_PROMPT}"
    return Record(index, str(row.values.get("id", index)), question, images(row, "image"), chr(ord("A") + answer))

  def score(self, record, prediction):
    choice = metrics.ai2d_choice(prediction).strip()
    return {"parsed": choice, "score": metrics.exact_match(choice, record.target)}


class ScienceQA(Task):
  name = "scienceqa_img"
  required_columns = ("question", "choices", "answer", "image")
  description = "ScienceQA-IMG (test)"

  def record(self, row, index):
    options = string_list(row, "choices")
    hint = text(row, "hint", required=False)
    context = f"Context: {hint}\n" if hint else ""
    answer = int(float(value(row, "answer")))
    visuals = () if row.values.get("image") is None else images(row, "image")
    return Record(index, str(row.values.get("id", index)),
                  f"{context}{text(row, 'question')}\n{lettered(options)}\n{LETTER_PROMPT}", visuals,
                  chr(ord("A") + answer), {"subject": row.values.get("subject")})

  def score(self, record, prediction):
    return {"score": metrics.scienceqa_match(prediction.strip(), record.target)}

  def summarize(self, results):
    return {"metrics": {"accuracy": mean_score(results)}, "breakdown": {"subject": breakdown(results, "subject")}}


class RealWorldQA(Task):
  name = "realworldqa"
  required_columns = ("question", "answer", "image")
  description = "RealWorldQA (test)"

  def record(self, row, index):
    return Record(index, str(row.values.get("id", index)), text(row, "question").strip(), images(row, "image"),
                  text(row, "answer"))

  def score(self, record, prediction):
    choice = metrics.realworldqa_choice(prediction, record.question).strip()
    return {"parsed": choice, "score": metrics.exact_match(choice, record.target)}


MMMU_DOMAINS = {
    "Art and Design": ("Art", "Art_Theory", "Design", "Music"),
    "Business": ("Accounting", "Economics", "Finance", "Manage", "Marketing"),
    "Science": ("Biology", "Chemistry", "Geography", "Math", "Physics"),
    "Health and Medicine": ("Basic_Medical_Science", "Clinical_Medicine", "Diagnostics_and_Laboratory_Medicine",
                            "Pharmacy", "Public_Health"),
    "Humanities and Social Science": ("History", "Literature", "Sociology", "Psychology"),
    "Tech and Engineering": ("Agriculture", "Architecture_and_Engineering", "Computer_Science", "Electronics",
                             "Energy_and_Power", "Materials", "Mechanical_Engineering"),
}


class MMMU(Task):
  name = "mmmu_val"
  required_columns = ("id", "question", "options", "answer", "question_type", "image_1")
  description = "MMMU (validation)"

  def record(self, row, index):
    sample_id = text(row, "id")
    kind = text(row, "question_type")
    if kind == "multiple-choice":
      options = string_list(row, "options")
      question = f"{text(row, 'question')}\n{lettered(options)}\n\n{LETTER_PROMPT}"
    else:
      options = []
      question = f"{text(row, 'question')}\n\n{SHORT_PROMPT}"
    answer = text(row, "answer")
    if answer.startswith("["):
      try:
        answer = [str(a) for a in ast.literal_eval(answer)]
      except (ValueError, SyntaxError):
        pass
    subject = sample_id.split("_", 1)[1].rsplit("_", 1)[0] if sample_id.count("_") >= 2 else None
    return Record(index, sample_id, question, referenced_images(row, question), answer,
                  {"question_type": kind, "options": options, "subject": subject})

  def score(self, record, prediction):
    if record.meta["question_type"] == "multiple-choice":
      # MMMU guesses at random when no option can be read; seeded by the id, so reruns agree.
      parsed = mmmu_choice(prediction, record.meta["options"], random.Random(record.id))
      golds = record.target if isinstance(record.target, list) else [record.target]
      return {"parsed": parsed, "score": float(parsed in golds)}
    parsed = mmmu_open_answers(prediction)
    return {"parsed": parsed, "score": float(mmmu_open_correct(record.target, parsed))}

  def summarize(self, results):
    subjects = breakdown(results, "subject")
    return {"metrics": {"accuracy": mean_score(results)},
            "breakdown": {"domain": mmmu_domains(subjects), "subject": subjects,
                          "question_type": breakdown(results, "question_type")}}


def mmmu_domains(subjects: dict) -> dict:
  """MMMU's domain scores from the subject breakdown: the accuracy over all questions of the domain's
  subjects (instance level, not a mean of subject means)."""
  domains = {}
  for domain, names in MMMU_DOMAINS.items():
    inside = [subjects[n] for n in names if n in subjects]
    count = sum(s["count"] for s in inside)
    if count:
      domains[domain] = {"score": sum(s["score"] * s["count"] for s in inside) / count, "count": count}
  return domains

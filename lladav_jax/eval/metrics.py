"""Scoring rules for one answer: exact match, ChartQA relaxed accuracy, ANLS, MME yes/no, MMStar,
SEED-Bench, ScienceQA, AI2D, RealWorldQA, DocVQA, VideoMME and MLVU answer parsing.

Each function follows the rule lmms-eval applies for its benchmark (re-implemented here; the
benchmark notes in docs/eval.md say which). Option-letter extraction lives in `choices.py`.
"""

import re
import string
from typing import Iterable, Sequence

_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str, *, ignore_case: bool = True, ignore_punctuation: bool = True) -> str:
  """lmms-eval's `exact_match` preprocessing: lower-case, then delete ASCII punctuation (no strip)."""
  if ignore_case:
    text = text.lower()
  if ignore_punctuation:
    text = text.translate(_PUNCTUATION)
  return text


def exact_match(prediction: str, references: str | Sequence[str], *, ignore_case: bool = True,
                ignore_punctuation: bool = True) -> float:
  """1.0 when the normalised prediction equals any normalised reference."""
  refs = [references] if isinstance(references, str) else list(references)
  pred = normalize(prediction, ignore_case=ignore_case, ignore_punctuation=ignore_punctuation)
  return float(any(pred == normalize(r, ignore_case=ignore_case, ignore_punctuation=ignore_punctuation)
                   for r in refs))


def _to_float(text: str) -> float | None:
  try:
    if text.endswith("%"):
      return float(text.rstrip("%")) / 100.0
    return float(text)
  except ValueError:
    return None


def relaxed_correctness(prediction: str, target: str, max_relative_change: float = 0.05) -> bool:
  """ChartQA: numbers within 5% of a non-zero target (a trailing % divides by 100), else an exact,
  case-insensitive string match."""
  pred, gold = _to_float(prediction), _to_float(target)
  if pred is not None and gold:
    return abs(pred - gold) / abs(gold) <= max_relative_change
  return prediction.lower() == target.lower()


def levenshtein(a: str, b: str) -> int:
  """Edit distance (insertions, deletions, substitutions all cost 1)."""
  if len(a) > len(b):
    a, b = b, a
  previous = list(range(len(a) + 1))
  for j, cb in enumerate(b, start=1):
    current = [j]
    for i, ca in enumerate(a, start=1):
      current.append(previous[i - 1] if ca == cb else 1 + min(previous[i - 1], previous[i], current[-1]))
    previous = current
  return previous[-1]


def anls(prediction: str | None, references: Iterable[str], threshold: float = 0.5) -> float:
  """Average Normalised Levenshtein Similarity of one answer, as lmms-eval's DocVQA/InfoVQA score it.

  Both strings are lower-cased with whitespace collapsed before the distance; the normaliser is the
  longer of the two strings as given (lmms-eval's rule). The best reference counts; a similarity
  below `threshold` scores 0. A missing prediction (None) is the string "None".
  """
  pred = "None" if prediction is None else prediction
  distances = []
  for ref in references:
    gold = " ".join(ref.strip().lower().split())
    det = " ".join(pred.strip().lower().split())
    length = max(len(ref.upper()), len(pred.upper()))
    distances.append(0.0 if length == 0 else levenshtein(gold, det) / length)
  if not distances:
    raise ValueError("anls needs at least one reference answer")
  score = 1.0 - min(distances)
  return 0.0 if score < threshold else score


def parse_final_answer(response: str) -> str | None:
  """DocVQA/InfoVQA's `Answer: X` parsing: the text after the last "Answer:" (asterisks removed),
  after its last colon, stripped of spaces, dots and commas; None when there is no "Answer:"."""
  if not response:
    return None
  response = response.replace("*", "")
  at = response.rfind("Answer:")
  if at == -1:
    return None
  return response[at:].strip().split(":")[-1].strip().strip("., ")


def mme_label(prediction: str) -> str:
  """MME's yes/no reading of an answer: "yes", "no" or "other"."""
  text = prediction.lower().strip().replace(".", "")
  if text in ("yes", "no"):
    return text
  if len(text) == 1:
    return {"y": "yes", "n": "no"}.get(text, "other")
  head = text[:4]
  if "yes" in head:
    return "yes"
  if "no" in head:
    return "no"
  return "other"


def mmstar_match(prediction: str, answer: str) -> float:
  """MMStar: the answer letter must be the prediction's first character, or follow "(", "option "
  or "the answer is " at its start."""
  gold = answer.lower().strip().replace("\n", " ")
  pred = prediction.lower().strip().replace("\n", " ")
  for prefix in ("", "(", "option ", "the answer is "):
    if pred.startswith(prefix) and len(pred) > len(prefix) and pred[len(prefix)] == gold:
      return 1.0
  return 0.0


def seed_choice(prediction: str) -> str:
  """SEED-Bench: the stripped prediction's first character is the chosen option."""
  pred = prediction.strip()
  return pred[0] if len(pred) > 1 else pred


def scienceqa_match(prediction: str, target: str) -> float:
  """ScienceQA-IMG (LLaVA's rule): the exact letter, or an answer starting "X." with X the letter."""
  if prediction == target:
    return 1.0
  if len(prediction) >= 2 and prediction[0].isupper() and prediction[1] == ".":
    return float(prediction[0] == target)
  return 0.0


_LEADING_LETTER = re.compile(r"^\s*([A-Z])\.")


def ai2d_choice(prediction: str) -> str:
  """AI2D's filter: "B. text" -> "B"; anything else is kept as it is."""
  found = _LEADING_LETTER.match(prediction)
  return found.group(1) if found else prediction


_NUMBER_WORDS = {"zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
                 "seven": "7", "eight": "8", "nine": "9", "ten": "10"}
_QUESTION_OPTION = re.compile(r"\b([A-Z])\.\s+([^\n]*)")


def realworldqa_choice(prediction: str, question: str) -> str:
  """RealWorldQA's filters: a whole-answer number word becomes its digits; then the answer, with
  punctuation removed, is searched for the option texts listed in the question ("A. text" lines,
  lettered in order of appearance); a hit gives that letter, else the cleaned answer is kept."""
  prediction = _NUMBER_WORDS.get(prediction.lower(), prediction)
  texts = [m.group(2).strip() for m in _QUESTION_OPTION.finditer(question)]
  letters = {}
  for i, text in enumerate(texts):
    letters[text] = chr(ord("A") + i)
  cleaned = re.sub(r"[^\w\s]", "", prediction).strip()
  if texts:
    found = re.search("|".join(re.escape(t) for t in texts), cleaned)
    if found and found.group() in letters:
      return letters[found.group()]
  return cleaned


# lmms-eval's list, whose missing commas join the last four strings into two (kept: they never match).
_VIDEOMME_PREFIXES = ("The best answer is", "The correct answer is", "The answer is", "The answer",
                      "The best option is" "The correct option is", "Best answer:" "Best option:")


def videomme_choice(prediction: str) -> str:
  """VideoMME: the first of A-D after answer prefixes are removed; "" for none, and for an answer of more
  than ten words without any of A-D."""
  text = prediction.strip()
  for prefix in _VIDEOMME_PREFIXES:
    text = text.replace(prefix, "")
  if len(text.split()) > 10 and not re.search("[ABCD]", text):
    return ""
  match = re.search(r"[ABCD]", text)
  return match[0] if match else ""


def mlvu_choice(prediction: str) -> str:
  """MLVU: the character before the first ")" (the prompt ends in "Best option: ("), else the whole
  stripped answer."""
  text = prediction.strip()
  if ")" in text:
    index = text.index(")")
    return text[index - 1:index]
  return text

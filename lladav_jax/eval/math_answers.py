"""Rule-based answer extraction for MathVista and MathVerse.

lmms-eval has a GPT model extract the final answer from the response (and, for MathVerse, judge it
against the gold answer). Without an external judge these rules stand in for it: they read the
answer the prompt asked for ("Answer: xxx"), else an "answer is ..." phrase, else an option letter or
the last number. The normalisation after extraction is MathVista's own. Scores from these rules are
comparable between runs here, not with published judge-based numbers (docs/eval.md).
"""

import re
from typing import Sequence

from lladav_jax.eval.choices import infer_option_letter
from lladav_jax.eval.metrics import levenshtein

_ANSWER_TAG = re.compile(r"answer\s*:\s*(.+)", re.IGNORECASE | re.DOTALL)
_ANSWER_IS = re.compile(r"answer\s+is\s*:?\s*(.+)", re.IGNORECASE | re.DOTALL)
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
_BRACKET_LETTER = re.compile(r"\(([a-zA-Z])\)")


def _final_part(response: str) -> str:
  """The text after a closing think tag, if the model wrote its reasoning inside one."""
  return response.rsplit("</think>", 1)[-1].strip()


def _first_line(text: str) -> str:
  return text.strip().split("\n")[0].strip().rstrip(".").strip()


def extract_answer(response: str, choices: Sequence[str] | None = None) -> str:
  """The final answer in a free-text response ("" when there is nothing to read)."""
  text = _final_part(response)
  if not text:
    return ""
  for pattern in (_ANSWER_TAG, _ANSWER_IS):
    found = list(pattern.finditer(text))
    if found:
      return _first_line(found[-1].group(1))
  if choices:
    letter = infer_option_letter(text, len(choices))
    if letter:
      return letter
    hits = [c for c in choices if str(c).lower() in text.lower()]
    if len(hits) == 1:
      return hits[0]
  numbers = _NUMBER.findall(text)
  if numbers:
    return numbers[-1].replace(",", "")
  return _first_line(text)


def mathvista_extract(response: str, question_type: str, answer_type: str, choices: Sequence[str] | None) -> str:
  """MathVista's shortcuts (the response is an option, or parses as the answer type), then the rules."""
  if not response:
    return ""
  if question_type == "multi_choice" and choices and response in choices:
    return response
  try:
    if answer_type == "integer":
      return str(int(response))
    if answer_type == "float":
      return str(float(response))
  except ValueError:
    pass
  return extract_answer(response, choices if question_type == "multi_choice" else None)


def mathvista_normalize(extraction: str, choices: Sequence[str] | None, question_type: str, answer_type: str,
                        precision: int | float | None) -> str | None:
  """MathVista's normalisation: an option letter (or "(B) ...") becomes the option text, other text the
  most similar option by edit distance; integers and floats (rounded to `precision`) are re-printed."""
  if question_type == "multi_choice":
    choices = list(choices or [])
    extraction = str(extraction).strip()
    bracket = _BRACKET_LETTER.findall(extraction)
    if bracket:
      extraction = bracket[0].upper()
    letters = [chr(ord("A") + i) for i in range(len(choices))]
    if extraction in letters:
      return choices[letters.index(extraction)]
    if not choices:
      return extraction
    distances = [levenshtein(extraction, str(c)) for c in choices]
    return choices[distances.index(min(distances))]
  try:
    if answer_type == "integer":
      return str(int(float(extraction)))
    if answer_type == "float":
      return str(round(float(extraction), int(precision or 0)))
  except (TypeError, ValueError):
    return None
  return str(extraction)


def same_answer(prediction, answer) -> bool:
  """MathVista's `safe_equal`: the printed, stripped values are equal."""
  return str(prediction).strip() == str(answer).strip()


def mathverse_correct(response: str, answer: str, question_type: str, *, last_words: int = 30) -> tuple[str, bool]:
  """(extraction, correct) for a MathVerse response: the last `last_words` words (MathVerse's
  truncation), the rules above, then equality with the gold answer: the option letter for
  multiple choice, else the same number (to 1e-6 relative) or the same lower-cased text."""
  words = response.strip().split(" ")
  text = " ".join(words[-last_words:]) if last_words > 0 else response
  multi = question_type == "multi-choice"
  extraction = extract_answer(text, ["A", "B", "C", "D", "E"] if multi else None)
  gold = str(answer).strip()
  if multi:
    letter = _BRACKET_LETTER.findall(extraction)
    picked = (letter[0] if letter else extraction[:1]).upper()
    return extraction, picked == gold.upper()[:1]
  got, want = _as_number(extraction), _as_number(gold)
  if got is not None and want is not None:
    return extraction, abs(got - want) <= 1e-6 * max(1.0, abs(want))
  return extraction, extraction.strip().lower().rstrip(".") == gold.lower().rstrip(".")


def _as_number(text: str) -> float | None:
  try:
    return float(text.replace(",", "").strip())
  except ValueError:
    return None

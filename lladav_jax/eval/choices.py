"""Reading the chosen option out of free text: MMBench's rules (letters, then option texts), MMMU's
multiple-choice and open-answer parsing.

    infer_option("The answer is (B).", {"A": "cat", "B": "dog"})  -> "B"
"""

import random
import re
import string
from typing import Mapping, Sequence

LETTERS = string.ascii_uppercase
# MMBench: a letter wrapped like this (prefix, suffix) counts as a choice.
_WRAPPINGS = (("", "."), ("", ","), ("", ":"), ("", ")"), ("", ")."), ("(", ")"), ("(", ")."), (":", ""),
              (":", ","), (":", "."), (":", ")"), (":", ")."))


def infer_option_letter(answer: str, num_choices: int = 5) -> str | None:
  """MMBench's `can_infer_option`: the one option letter the answer names, or None.

  Words are whitespace-split; a bare letter counts when exactly one appears (but not an "A" in an
  answer of more than three words, which may be the article), else a letter wrapped as "B.", "(B)",
  "B)", ":B" ... when exactly one such form appears.
  """
  choices = LETTERS[:num_choices]
  words = [w.strip() for w in answer.split()]
  bare = [c for c in choices if c in words]
  if len(bare) == 1 and not ("A" in words and len(words) > 3):
    return bare[0]
  for prefix, suffix in _WRAPPINGS:
    wrapped = [c for c in choices if prefix + c + suffix in words]
    if len(wrapped) == 1:
      return wrapped[0]
  return None


def infer_option_text(answer: str, options: Mapping[str, str]) -> str | None:
  """MMBench's `can_infer_text`: the one option whose text occurs in the answer (case-insensitive)."""
  text = answer.lower()
  hits = [letter for letter, option in options.items() if str(option).lower() in text]
  return hits[0] if len(hits) == 1 else None


def infer_option(answer: str, options: Mapping[str, str]) -> str | None:
  """The option an answer picks (letter rules first, then option texts), or None (lmms-eval would ask
  a GPT judge here; the rule-based result counts such an answer as wrong)."""
  return infer_option_letter(answer) or infer_option_text(answer, options)


# --- MMMU (the official MMMU evaluation rules) ---

def mmmu_choice(response: str, options: Sequence[str], rng: random.Random) -> str:
  """The letter an MMMU multiple-choice answer picks: "(B)", then "B ", then "B." forms, then (for
  answers of more than five words) option texts; the last-mentioned wins among several; none found
  picks a random letter from `rng` (as MMMU does)."""
  letters = [LETTERS[i] for i in range(len(options))]
  index2ans = dict(zip(letters, options))
  for char in (",", ".", "!", "?", ";", ":", "'"):
    response = response.strip(char)
  response = " " + response + " "
  bracketed = [c for c in letters if f"({c})" in response]
  candidates, by_text = bracketed, False
  if not candidates:
    candidates = [c for c in letters if f"{c} " in response]
  if not candidates:
    candidates = [c for c in letters if f"{c}." in response]
  if not candidates and len(response.split()) > 5:
    candidates = [c for c in letters if index2ans[c].lower() in response.lower()]
    by_text = bool(candidates)
  if not candidates:
    return rng.choice(letters)
  if len(candidates) == 1:
    return candidates[0]
  if by_text:
    positions = [response.lower().rfind(index2ans[c].lower()) for c in candidates]
  elif bracketed:
    positions = [response.rfind(f"({c})") for c in candidates]
  else:
    positions = [response.rfind(f" {c} ") for c in candidates]
  return candidates[max(range(len(candidates)), key=lambda i: (positions[i], -i))]


_NUMBER_PATTERNS = (r"-?\b\d{1,3}(?:,\d{3})+\b",  # with thousands commas
                    r"-?\d+(?:\.\d+)?[eE][+-]?\d+",  # scientific
                    r"-?(?:\d+\.\d+|\.\d+|\d+\b)(?![eE][+-]?\d+)(?![,\d])")  # plain
_KEY_INDICATORS = ("could be ", "so ", "is ", "thus ", "therefore ", "final ", "answer ", "result ")


def _is_number(text: str) -> bool:
  try:
    float(text.replace(",", ""))
    return True
  except ValueError:
    return False


def mmmu_normalize(text: str) -> list:
  """A number becomes [float rounded to 2 places]; a string is lower-cased ([" x", "x "] for one
  character, so that single letters do not match inside words)."""
  text = text.strip()
  if _is_number(text):
    return [round(float(text.replace(",", "")), 2)]
  text = text.lower()
  return [" " + text, text + " "] if len(text) == 1 else [text]


def mmmu_open_answers(response: str) -> list:
  """MMMU's open-answer parsing: the shortest tail after an indicator ("is ", "so ", "answer ", ...,
  and "=" in the last sentence) of each sentence, plus every number in them, normalised."""
  text = response.strip().strip(".").lower()
  sentences = re.split(r"\.\s(?=[A-Z])|\n", text)
  keys = []
  for i, sentence in enumerate(sentences):
    indicators = _KEY_INDICATORS + (("=",) if i == len(sentences) - 1 else ())
    shortest = None
    for indicator in indicators:
      if indicator in sentence:
        tail = sentence.split(indicator)[-1].strip()
        if not shortest or len(tail) < len(shortest):
          shortest = tail
    if shortest and shortest.strip() not in (":", ",", ".", "!", "?", ";", "'"):
      keys.append(shortest)
  if not keys:
    keys = [text]
  found = list(keys)
  for key in keys:
    for pattern in _NUMBER_PATTERNS:
      found.extend(re.findall(pattern, key))
  out = []
  for item in found:
    for value in mmmu_normalize(item):
      if value not in out:
        out.append(value)
  return out


def mmmu_open_correct(answers: str | Sequence[str], parsed: Sequence) -> bool:
  """An open answer is right when a normalised gold string occurs in a parsed string, or a gold
  number equals a parsed number."""
  golds = []
  for gold in ([answers] if isinstance(answers, str) else answers):
    golds.extend(mmmu_normalize(gold))
  for pred in parsed:
    if isinstance(pred, str):
      if any(isinstance(g, str) and g in pred for g in golds):
        return True
    elif pred in golds:
      return True
  return False

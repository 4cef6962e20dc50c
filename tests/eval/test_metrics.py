"""Scoring rules on hand-computed cases (every expected value is worked out in the comment)."""

import random

import pytest

from lladav_jax.eval import choices, math_answers, metrics
from lladav_jax.eval.tasks.choice import MMBench, MMStar, MMMU
from lladav_jax.eval.tasks.open_ended import MME


def test_anls_thresholds_and_normalisation():
  assert metrics.anls("hallo", ["hello"]) == pytest.approx(0.8)  # 1 edit / 5 chars
  # "abxy" vs "abcd": 2 edits / 4 = 0.5 -> similarity 0.5, not below the 0.5 threshold: kept.
  assert metrics.anls("abxy", ["abcd"]) == pytest.approx(0.5)
  # "axyz" vs "abcd": 3 / 4 -> 0.25 < 0.5 -> 0.
  assert metrics.anls("axyz", ["abcd"]) == 0.0
  assert metrics.anls("axyz", ["abcd"], threshold=0.2) == pytest.approx(0.25)
  # Case and inner whitespace are normalised before the distance ...
  assert metrics.anls("  Hello   World ", ["hello world"]) == 1.0
  # ... but the normaliser is the raw length: "  abxd" (6 chars) vs "abcd": 1 edit / 6.
  assert metrics.anls("  abxd", ["abcd"]) == pytest.approx(1 - 1 / 6)
  # The best of several references counts; no prediction reads as "None".
  assert metrics.anls("cat", ["dog", "cat"]) == 1.0
  assert metrics.anls(None, ["none"]) == 1.0
  assert metrics.anls(None, ["42"]) == 0.0


def test_relaxed_accuracy_at_the_five_percent_boundary():
  assert metrics.relaxed_correctness("105", "100")  # |105 - 100| / 100 = 0.05 <= 0.05
  assert metrics.relaxed_correctness("95", "100")
  assert not metrics.relaxed_correctness("105.01", "100")  # 0.0501
  assert not metrics.relaxed_correctness("94.99", "100")
  assert metrics.relaxed_correctness("5%", "0.05")  # percent divides by 100
  assert metrics.relaxed_correctness("0.0525", "5%")  # 0.0525 vs 0.05: exactly 5%
  assert not metrics.relaxed_correctness("0.0", "0")  # a zero target needs the exact string
  assert metrics.relaxed_correctness("0", "0")
  assert metrics.relaxed_correctness("Yes", "yes")  # text: case-insensitive equality
  assert not metrics.relaxed_correctness("yes.", "yes")


@pytest.mark.parametrize("text, options, expected", [
    ("The answer is (B).", {"A": "cat", "B": "dog"}, "B"),  # wrapped "(B)."
    ("B", {"A": "cat", "B": "dog"}, "B"),
    ("C. blue", {"A": "red", "B": "green", "C": "blue"}, "C"),
    ("Answer:D", {}, None),  # "Answer:D" is one word; no rule reads it
    ("answer :D", {}, "D"),  # ":D" is a wrapping
    ("A or B", {"A": "cat", "B": "dog"}, None),  # two letters: ambiguous, no option text either
    # "A" in an answer of more than three words may be the article: the option text decides.
    ("A dog is on the mat", {"A": "cat", "B": "dog"}, "B"),
    ("it is a dog", {"A": "cat", "B": "dog"}, "B"),
    ("a cat and a dog", {"A": "cat", "B": "dog"}, None),  # two option texts
])
def test_option_letter_extraction(text, options, expected):
  assert choices.infer_option(text, options) == expected


def test_benchmark_answer_rules():
  assert metrics.mmstar_match("(B) a dog", "B") == 1.0
  assert metrics.mmstar_match("The answer is c", "C") == 1.0
  assert metrics.mmstar_match("option d", "D") == 1.0
  assert metrics.mmstar_match("xB", "B") == 0.0 and metrics.mmstar_match("", "B") == 0.0
  assert [metrics.mme_label(x) for x in ("Yes.", "N", "Not sure", "maybe", "y")] == ["yes", "no", "no", "other", "yes"]
  assert metrics.parse_final_answer("It says so. Answer: **42**.") == "42"
  assert metrics.parse_final_answer("Answer: a, then Answer: Paris, France.") == "Paris, France"  # the last tag
  assert metrics.parse_final_answer("Answer: at 10:30.") == "30"  # the text after the last colon
  assert metrics.parse_final_answer("no tag") is None
  assert metrics.seed_choice(" B) blue") == "B" and metrics.seed_choice("C") == "C"
  assert metrics.scienceqa_match("B. text", "B") == 1.0 and metrics.scienceqa_match("b. text", "B") == 0.0
  assert metrics.ai2d_choice(" C. blue") == "C" and metrics.ai2d_choice("blue") == "blue"
  question = "Which?\nA. 3 meters\nB. 5 meters\nPlease answer directly."
  assert metrics.realworldqa_choice("5 meters.", question) == "B"
  assert metrics.realworldqa_choice("three", question) == "3"  # number word -> digit, no option text
  assert metrics.exact_match(" B.", "b") == 0.0  # the space is not ignored
  assert metrics.exact_match("B.", ["a", "b"]) == 1.0


def test_mmmu_parsing():
  options = ["cat", "dog", "bird"]
  rng = random.Random(0)
  assert choices.mmmu_choice("(A) or (C)? I pick (C)", options, rng) == "C"  # last bracketed
  assert choices.mmmu_choice("B", options, rng) == "B"
  assert choices.mmmu_choice("I think the right animal here is the dog", options, rng) == "B"  # text, > 5 words
  guesses = {choices.mmmu_choice("??", options, random.Random(seed)) for seed in range(20)}
  assert guesses <= {"A", "B", "C"} and len(guesses) > 1  # a random guess when nothing can be read
  parsed = choices.mmmu_open_answers("The length is 3.14159 cm")
  assert 3.14 in parsed  # numbers rounded to 2 places
  assert choices.mmmu_open_correct("3.14", parsed)
  assert not choices.mmmu_open_correct("2.71", parsed)
  assert choices.mmmu_open_correct(["paris", "lyon"], choices.mmmu_open_answers("So the city is Paris."))


def test_math_rules():
  assert math_answers.extract_answer("Reasoning... Answer: 1.25.") == "1.25"
  assert math_answers.extract_answer("<think>2+2</think> so the answer is 7.") == "7"
  assert math_answers.extract_answer("first 3 then 12") == "12"  # the last number
  assert math_answers.mathvista_normalize("(B) 8/11", ["3/11", "8/11"], "multi_choice", "text", None) == "8/11"
  assert math_answers.mathvista_normalize("B", ["3/11", "8/11"], "multi_choice", "text", None) == "8/11"
  assert math_answers.mathvista_normalize("8/12", ["3/11", "8/11"], "multi_choice", "text", None) == "8/11"  # closest
  assert math_answers.mathvista_normalize("1.26", None, "free_form", "float", 1) == "1.3"
  assert math_answers.mathvista_normalize("3.0", None, "free_form", "integer", None) == "3"
  assert math_answers.mathvista_normalize("x", None, "free_form", "integer", None) is None
  assert math_answers.mathverse_correct("so the answer is (C).", "C", "multi-choice") == ("(C)", True)
  assert math_answers.mathverse_correct("Answer: 2,000", "2000", "free-form")[1]
  assert not math_answers.mathverse_correct("Answer: 20", "2000", "free-form")[1]


def _results(rows):
  return [{"score": s, "meta": m, "parsed": "A"} for s, m in rows]


def test_mme_scores():
  # existence (perception): image i1 both right -> 100 + 100; image i2 one of two -> 50 + 0: mean 125.
  # code_reasoning (cognition): both wrong -> 0.
  rows = [(1.0, {"category": "existence", "image_id": "i1"}), (1.0, {"category": "existence", "image_id": "i1"}),
          (1.0, {"category": "existence", "image_id": "i2"}), (0.0, {"category": "existence", "image_id": "i2"}),
          (0.0, {"category": "code_reasoning", "image_id": "c1"}),
          (0.0, {"category": "code_reasoning", "image_id": "c1"})]
  summary = MME().summarize(_results(rows))
  assert summary["metrics"]["mme_perception_score"] == pytest.approx(125.0)
  assert summary["metrics"]["mme_cognition_score"] == 0.0
  assert summary["breakdown"]["category"]["existence"] == {"score": 125.0, "count": 4}


def test_mmbench_circular_and_mmstar_macro():
  # Question 5: main right, rotation wrong -> 0. Question 7: both right -> 1. Accuracy 1/2, rows 3/4.
  rows = [(1.0, {"group": 5, "main": True, "category": "x"}), (0.0, {"group": 5, "main": False, "category": "x"}),
          (1.0, {"group": 7, "main": True, "category": "y"}), (1.0, {"group": 7, "main": False, "category": "y"})]
  summary = MMBench().summarize(_results(rows))
  assert summary["metrics"]["accuracy"] == 0.5 and summary["metrics"]["row_accuracy"] == 0.75
  assert summary["breakdown"]["category"] == {"x": {"score": 0.0, "count": 1}, "y": {"score": 1.0, "count": 1}}
  # MMStar: L2 a = [1, 0] -> .5, b = [1] -> 1 (both in X), c = [0, 0, 1, 1] -> .5 (in Y).
  # average = (.5 + 1 + .5) / 3; X = (.5 + 1) / 2; Y = .5.
  star = [(1.0, ("X", "a")), (0.0, ("X", "a")), (1.0, ("X", "b")), (0.0, ("Y", "c")), (0.0, ("Y", "c")),
          (1.0, ("Y", "c")), (1.0, ("Y", "c"))]
  summary = MMStar().summarize(_results([(s, {"category": c, "l2_category": l}) for s, (c, l) in star]))
  assert summary["metrics"]["average"] == pytest.approx(2 / 3)
  assert summary["breakdown"]["category"]["X"]["score"] == pytest.approx(0.75)
  assert summary["breakdown"]["category"]["Y"]["score"] == pytest.approx(0.5)


def test_mmmu_domains():
  rows = [(1.0, {"subject": "Art"}), (0.0, {"subject": "Art"}), (1.0, {"subject": "Music"}),
          (0.0, {"subject": "Physics"})]
  summary = MMMU().summarize(_results(rows))
  assert summary["metrics"]["accuracy"] == 0.5
  # Art and Design: (0.5 * 2 + 1.0 * 1) / 3 instances.
  assert summary["breakdown"]["domain"]["Art and Design"] == {"score": pytest.approx(2 / 3), "count": 3}
  assert summary["breakdown"]["domain"]["Science"] == {"score": 0.0, "count": 1}

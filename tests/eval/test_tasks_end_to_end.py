"""Every task on a tiny file of its layout (parquet written with pyarrow, TSV, JSONL), evaluated end to
end with a tiny random model.

Checked against the benchmark rules written out here: the exact question text each task must send
(lmms-eval's wording), the images and gold answer, the score of the prediction by the metric rule,
and for several tasks the prediction itself against a reference decode: upstream's prompt built
directly, the library sampler on that one sample, and upstream's answer clean-up.
"""

import base64
import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lladav_jax.eval import evaluate, get_task, load_task_records, metrics, task_settings
from lladav_jax.eval.choices import infer_option
from lladav_jax.eval.tasks.base import MULTIPLE_CHOICE
from lladav_jax.eval.tasks.jsonl import SHORT_ANSWER
from tests.eval import common

LETTER = "Answer with the option's letter from the given choices directly."
IMG = common.png_bytes(24, 16, 1)
IMG2 = common.png_bytes(16, 24, 2)



def parquet(path, rows):
  pq.write_table(pa.Table.from_pylist(rows), path)
  return str(path)


def image(data=IMG):
  return {"bytes": data, "path": None}


def run(setup, task_name, paths, tmp_path, batch_size=4, short=False):
  """short: decode 2 tokens in 2 steps whatever the task's setting (for tests of prompts and scores)."""
  model, params, tokenizer = setup
  task = get_task(task_name)
  records, failures = load_task_records(task, paths)
  settings = task_settings(MULTIPLE_CHOICE, tokenizer, model.config.tokens.eot) if short else None
  result = evaluate(model, params, tokenizer, task, records, failures=failures, batch_size=batch_size,
                    settings=settings, output_dir=str(tmp_path / "out"), progress=False, log=None)
  assert json.loads((tmp_path / "out" / "summary.json").read_text())["metrics"] == result.summary["metrics"]
  return records, result


MMBENCH_ROWS = [
    dict(index=0, question="What is it?", hint="A hint.", A="red", B="green", C="blue", D=None, answer="B",
         category="color", **{"L2-category": "perception"}),
    dict(index=1000000, question="What is it?", hint=None, A="green", B="blue", C="red", D=None, answer="A",
         category="color", **{"L2-category": "perception"}),
]
MMBENCH_QUESTIONS = [
    f"A hint. What is it? There are several options:\nA. red\nB. green\nC. blue\n\n{LETTER}",
    f"What is it? There are several options:\nA. green\nB. blue\nC. red\n\n{LETTER}",
]


def _check_mmbench(setup, records, result):
  model, params, tokenizer = setup
  assert [r.question for r in records] == MMBENCH_QUESTIONS
  for sample, question, row in zip(result.samples, MMBENCH_QUESTIONS, MMBENCH_ROWS):
    assert sample["prediction"] == common.reference_answer(model, params, tokenizer, question, [IMG], 2, 2, 2)
    options = {k: row[k] for k in "ABC"}
    assert sample["score"] == float(infer_option(sample["prediction"], options) == row["answer"])
  # Circular rule: question 0 counts only if both rows are right.
  assert result.summary["metrics"]["accuracy"] == float(all(s["score"] for s in result.samples))


def test_mmbench_parquet(setup, tmp_path):
  rows = [dict(r, image=image()) for r in MMBENCH_ROWS]
  records, result = run(setup, "mmbench_en_dev", [parquet(tmp_path / "dev.parquet", rows)], tmp_path)
  _check_mmbench(setup, records, result)


def test_mmbench_tsv_with_shared_image(setup, tmp_path):
  """MMBench's own TSV: base64 images, a rotation pointing at its original's image by index."""
  path = tmp_path / "MMBench_DEV_EN.tsv"
  columns = ["index", "question", "hint", "A", "B", "C", "D", "answer", "category", "l2-category", "image"]
  with open(path, "w", newline="") as f:
    writer = csv.writer(f, delimiter="\t")
    writer.writerow(columns)
    for row, picture in zip(MMBENCH_ROWS, [base64.b64encode(IMG).decode(), "0"]):
      values = dict(row, image=picture, **{"l2-category": "perception"})
      writer.writerow(["nan" if values.get(c) is None else values[c] for c in columns])
  records, result = run(setup, "mmbench_en_dev", [str(path)], tmp_path)
  assert all(r.images == (IMG,) for r in records)
  _check_mmbench(setup, records, result)


def test_chartqa_stops_at_newline(setup, tmp_path):
  model, params, tokenizer = setup
  rows = [dict(question="How many?", answer="12", type="human_test", image=image()),
          dict(question="Which year?", answer="2019", type="augmented_test", image=image())]
  records, result = run(setup, "chartqa", [parquet(tmp_path / "test.parquet", rows)], tmp_path)
  for sample, row, picture in zip(result.samples, rows, [IMG, IMG]):
    question = f"{row['question']}\nAnswer the question with a single word."
    assert sample["question"] == question
    assert sample["prediction"] == common.reference_answer(model, params, tokenizer, question, [picture], 16, 16, 16,
                                                    stops=("\n",))
    assert sample["score"] == float(metrics.relaxed_correctness(sample["prediction"], row["answer"]))
  assert set(result.summary["metrics"]) >= {"relaxed_overall", "relaxed_human_split", "relaxed_augmented_split"}


def test_docvqa_reason_prompt_and_anls(setup, tmp_path):
  model, params, tokenizer = setup
  rows = [dict(questionId=7, question="What is the date?", answers=["1 May", "May 1"], question_types=["form"],
               image=image())]
  records, result = run(setup, "docvqa_val", [parquet(tmp_path / "val.parquet", rows)], tmp_path)
  question = ("What is the date?\nGive the reason and then write your final answer in the format 'Answer: X' "
              "where X is the answer to the question.")
  (sample,) = result.samples
  assert sample["question"] == question and sample["id"] == "7"
  assert sample["prediction"] == common.reference_answer(model, params, tokenizer, question, [IMG], 32, 16, 32)
  assert sample["score"] == metrics.anls(metrics.parse_final_answer(sample["prediction"]), ["1 May", "May 1"])


def test_jsonl_generic(setup, tmp_path):
  model, params, tokenizer = setup
  (tmp_path / "a.png").write_bytes(IMG)
  lines = [{"id": "x", "image": "a.png", "question": "What is in the image?", "options": ["red", "green"],
            "answer": "green", "category": "c1"},
           {"id": "y", "image": ["a.png", "a.png"], "question": "Same?", "answer": ["yes", "yes."],
            "metric": "exact_match"},
           {"id": "z", "question": "No image here?", "answer": "no", "metric": "anls"},
           {"id": "bad", "question": "?", "answer": "A", "metric": "bleu"}]
  path = tmp_path / "q.jsonl"
  path.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
  records, result = run(setup, "jsonl", [str(path)], tmp_path, short=True)
  # Mixed metrics choose the short-answer setting; only "choice" records the multiple-choice one.
  assert get_task("jsonl").decoding_for(records) == SHORT_ANSWER
  assert get_task("jsonl").decoding_for(records[:1]) == MULTIPLE_CHOICE
  questions = [f"What is in the image?\nA. red\nB. green\n{LETTER}",
               "Same?\nAnswer the question using a single word or phrase.",
               "No image here?\nAnswer the question using a single word or phrase."]
  assert [r.question for r in records] == questions and records[0].target == ["B"]
  assert [len(r.images) for r in records] == [1, 2, 0]
  # No think tag without images.
  for sample, question, pictures in zip(result.samples, questions, [[IMG], [IMG, IMG], []]):
    assert sample["prediction"] == common.reference_answer(model, params, tokenizer, question, pictures, 2, 2, 2)
  x, y, z, bad = result.samples
  assert x["score"] == float(infer_option(x["prediction"], {"A": "red", "B": "green"}) == "B")
  assert y["score"] == metrics.exact_match(y["prediction"], ["yes", "yes."])
  assert z["score"] == metrics.anls(z["prediction"], ["no"])
  assert "unknown metric 'bleu'" in bad["error"] and "q.jsonl row 3 column 'metric'" in bad["error"]
  assert result.summary["num_failed"] == 1 and result.summary["failed"][0]["id"] == "bad"


# Tasks checked by their prompt text, images, gold answer and score rule, decoding 2 tokens (the decode
# itself is the machinery checked above; the settings table is checked below).
CASES = {
    "mmstar": ([dict(index=3, question="Is it red? Please answer yes or no.\nOptions: A: yes, B: no", answer="A",
                     category="coarse perception", l2_category="image emotion", image=image())],
               ["Is it red?\nOptions: A: yes, B: no\nAnswer with the option's letter from the given choices directly"],
               ["A"], lambda p, t: metrics.mmstar_match(p, t)),
    "seedbench": ([dict(question_id="q1", question="What?", choice_a="a", choice_b="b", choice_c="c", choice_d="d",
                        answer="C", data_type="video", image=[image(), image(IMG2)])],
                  [f"What?\nA. a\nB. b\nC. c\nD. d\n{LETTER}"], ["C"],
                  lambda p, t: float(metrics.seed_choice(p).lower() == t.lower())),
    "ai2d": ([dict(question="Which part?", options=["x", "y", "z"], answer="2", image=image())],
             [f"Which part?\nA. x\nB. y\nC. z\n{LETTER}"], ["C"],
             lambda p, t: metrics.exact_match(metrics.ai2d_choice(p).strip(), t)),
    "scienceqa_img": ([dict(question="Which is hot?", choices=["ice", "fire"], answer=1, hint="Think of heat.",
                            subject="physics", image=image())],
                      [f"Context: Think of heat.\nWhich is hot?\nA. ice\nB. fire\n{LETTER}"], ["B"],
                      lambda p, t: metrics.scienceqa_match(p, t)),
    "realworldqa": ([dict(question="Where?\nA. left\nB. right\nPlease answer directly with only the letter.",
                          answer="B", image=image())],
                    ["Where?\nA. left\nB. right\nPlease answer directly with only the letter."], ["B"],
                    lambda p, t: metrics.exact_match(metrics.realworldqa_choice(p, "Where?\nA. left\nB. right"), t)),
    "mmmu_val": ([dict(id="validation_Art_Theory_1", question="See <image 1> and <image 2>.", options="['x', 'y']",
                       answer="A", question_type="multiple-choice", image_1=image(), image_2=image(IMG2),
                       image_3=None)],
                 [f"See <image 1> and <image 2>.\nA. x\nB. y\n\n{LETTER}"], ["A"], None),
    "infovqa_val": ([dict(questionId=9, question="How many?", answers=["3"], answer_type=["number"], image=image())],
                    ["How many?\nGive the reason and then write your final answer in the format 'Answer: X' where X "
                     "is the answer to the question."], [["3"]],
                    lambda p, t: metrics.anls(metrics.parse_final_answer(p), t)),
    "mme": ([dict(question_id="code/1.png", question="Is this code? Please answer yes or no.", answer="Yes",
                  category="code_reasoning", image=image())],
            ["Is this code?\nAnswer the question using a single word or phrase."], ["yes"],
            lambda p, t: float(metrics.mme_label(p) == t)),
    "mathvista_testmini": (
        [dict(pid="1", question="How long?", decoded_image=image(), choices=None, unit="cm", precision=1.0,
              answer="1.5", question_type="free_form", answer_type="float",
              metadata={"category": "math-targeted-vqa", "task": "geometry problem solving", "skills": ["algebra"]})],
        ["Question: How long? (Unit: cm)\nFirst perform reasoning, then finally answer the question requiring a "
         "floating-point number with one decimal place and provide the final value, e.g., 1.2, 1.3, 1.4, at the end "
         "in the following format: Answer: xxx.\nIf it is hard to determine, give the closest answer."], ["1.5"], None),
    "mathverse_testmini_vision": (
        [dict(sample_index="5", query_cot="Solve it. Choices: A:1 B:2", answer="A", question_type="multi-choice",
              problem_version="Vision Only", image=image(), metadata={"subfield": "Length"})],
        ["Solve it. Choices: A:1 B:2"], ["A"], None),
}
IMAGES = {"seedbench": 2, "mmmu_val": 2}


@pytest.mark.parametrize("task_name", sorted(CASES))
def test_task_prompts_and_scores(setup, tmp_path, task_name):
  rows, questions, targets, rule = CASES[task_name]
  records, result = run(setup, task_name, [parquet(tmp_path / "data.parquet", rows)], tmp_path, short=True)
  assert [r.question for r in records] == questions
  assert [r.target for r in records] == targets
  assert [len(r.images) for r in records] == [IMAGES.get(task_name, 1)] * len(rows)
  for sample, target in zip(result.samples, targets):
    assert isinstance(sample["prediction"], str) and "error" not in sample
    if rule is not None:
      assert sample["score"] == rule(sample["prediction"], target)
  assert result.summary["num_scored"] == len(rows)


def test_decoding_settings_follow_the_evaluation_script():
  """LLaDA-V's eval/scripts/evaluate.sh: (gen_length, steps, block_length, stops, think) per task."""
  expected = {"mmbench_en_dev": (2, 2, 2, (), "no_think"), "mmstar": (2, 2, 2, (), "no_think"),
              "seedbench": (2, 2, 2, (), "no_think"), "ai2d": (2, 2, 2, (), "no_think"),
              "scienceqa_img": (2, 2, 2, (), "no_think"), "realworldqa": (2, 2, 2, (), "no_think"),
              "mmmu_val": (2, 2, 2, (), "no_think"), "mmmu_pro_standard": (2, 2, 2, (), "no_think"),
              "mmmu_pro_vision": (2, 2, 2, (), "no_think"), "muirbench": (2, 2, 2, (), "no_think"),
              "mme": (2, 2, 2, (), "no_think"),
              "chartqa": (16, 16, 16, ("\n",), "no_think"), "docvqa_val": (32, 16, 32, (), "no_think"),
              "infovqa_val": (32, 16, 32, (), "no_think"), "mathvista_testmini": (96, 48, 96, (), "think"),
              "mathverse_testmini_vision": (64, 32, 64, (), "think")}
  for name, (gen, steps, block, stops, think) in expected.items():
    d = get_task(name).decoding_for([])
    assert (d.gen_length, d.steps, d.block_length, d.stops, d.think) == (gen, steps, block, stops, think), name

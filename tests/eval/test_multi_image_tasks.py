"""MMMU-Pro (standard, vision) and MuirBench on small files in their Hugging Face parquet layout, through the
batched, resumable runner, against lmms-eval's task code re-stated here (doc_to_text with the yaml's
prompts, doc_to_visual, process_results and the aggregation) and upstream's wrapper (where the images go,
the think tag), with hand-computed scores.
"""

import ast
import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lladav_jax.data.prompts import build_prompt
from lladav_jax.eval import bucketing, evaluate, get_task, load_task_records, runner
from tests.eval import common

IMAGES = [common.png_bytes(40, 24, seed=s) for s in range(4)]
SCREENSHOT = common.png_bytes(384, 384, seed=9)  # upstream: 2 crops, 729 + 27 * 28 = 1485 image tokens
TEN = [f"option {c}" for c in "abcdefghij"]


def image(data):
  return {"bytes": data, "path": None}


def write(path, rows):
  pq.write_table(pa.Table.from_pylist(rows), path)
  return str(path)


def standard_row(i, question, answer, subject, images):
  row = dict(id=f"test_{subject}_{i}", question=question, options=str(TEN), explanation="", img_type="['Diagrams']",
             answer=answer, topic_difficulty="Medium", subject=subject)
  row.update({f"image_{k}": image(images[k - 1]) if k <= len(images) else None for k in range(1, 8)})
  return row


STANDARD = [
    standard_row(0, "Compare <image 1> with <image 2>.", "B", "Art", IMAGES[:2]),
    standard_row(1, "What does <image 1> show?", "C", "Math", [SCREENSHOT]),
    # The options mention a third image; numbering sorts by name: image_1, image_2, image_3.
    standard_row(2, "<image 2> or <image 1>?", "A", "Art", IMAGES[:3]),
    standard_row(3, "No picture here: 2 + 2?", "D", "History", []),
    standard_row(4, "What is in <image 2>?", "A", "Art", IMAGES[:1]),  # image_2 missing: reported
]
STANDARD[2]["options"] = str(TEN[:9] + ["see <image 3>"])
VISION = [dict(id=f"test_{s}_{i}", image=image(SCREENSHOT), options=str(TEN), answer=a, subject=s)
          for i, (s, a) in enumerate([("Art", "A"), ("Physics", "B"), ("Art", "C")])]
MUIR = [
    dict(idx="0", task="Counting", image_relation="Complementary", image_type="Photography",
         question="How many cats are in <image> and <image>?", options=["1", "2", "3"], answer="B",
         image_list=[image(IMAGES[0]), image(IMAGES[1])], counts="2"),
    dict(idx="1", task="Image-Text Matching", image_relation="Independent", image_type="Photography",
         question="Which picture shows a dog?", options=["<image>", "<image>", "<image>", "None of the choices"],
         answer="D", image_list=[image(d) for d in IMAGES[:3]], counts="3"),
    dict(idx="2", task="Counting", image_relation="Temporal", image_type="Slides",
         question="Which slide comes first?", options=["the left", "the right"], answer="A",
         image_list=[image(IMAGES[2]), image(IMAGES[3])], counts="2"),
    dict(idx="3", task="Ordering", image_relation="Temporal", image_type="Slides",
         question="Order <image> and <image>.", options=["first", "second"], answer="A",
         image_list=[image(d) for d in IMAGES[:3]], counts="3"),  # 2 placeholders, 3 images: reported
]


# --- lmms-eval's task code, re-stated (lmms_eval/tasks/mmmu_pro/utils.py, muirbench/utils.py) ---

def lmms_mmmu_pro_text(doc):
  options = "\n".join(f"{chr(ord('A') + i)}. {o}" for i, o in enumerate(ast.literal_eval(doc["options"])))
  return f"{doc['question']}\n{options}\n\nAnswer with the option letter from the given choices directly."


def lmms_mmmu_pro_visual(doc):
  names = sorted({t.strip("<>").replace(" ", "_") for t in re.findall(r"<image \d+>", lmms_mmmu_pro_text(doc))})
  return [doc[n]["bytes"] for n in names]


def lmms_muir_text(doc):
  choices = "\n".join(f"{chr(ord('A') + i)}. {c}" for i, c in enumerate(doc["options"]))
  return f"{doc['question']}\n{choices}\nAnswer with the option's letter from the given choices directly."


def wrapper_prompt(tokenizer, context, num_images):
  """llava_onevision_llada.generate_until: "<image> <image>\\n" in front and " /no_think" after, unless the
  context already holds <image> (then neither)."""
  if num_images and "<image>" not in context:
    context = " ".join(["<image>"] * num_images) + "\n" + context + " /no_think"
  return build_prompt(tokenizer, context, num_images)


def muir_score(prediction, answer):
  """MultiChoiceRegexFilter ("X." at the start -> X) and muir_aggregation's case-blind comparison."""
  found = re.match(r"^\s*([A-Z])\.", prediction)
  return float((found.group(1) if found else prediction).lower().strip() == answer.lower().strip())


def run(sharp_setup, name, path, out, **kwargs):
  model, params, tokenizer = sharp_setup
  task = get_task(name)
  records, failures = load_task_records(task, [path])
  result = evaluate(model, params, tokenizer, task, records, failures=failures, batch_size=2, output_dir=str(out),
                    progress=False, log=None, **kwargs)
  return task, records, result


def check_prompts(sharp_setup, records, contexts, visuals):
  model, _, tokenizer = sharp_setup
  assert [r.question for r in records] == contexts
  assert [list(r.images) for r in records] == visuals
  counts = []
  for record in records:
    prompt = bucketing.probe(record, tokenizer, model.config, think="no_think")
    assert list(prompt.ids) == wrapper_prompt(tokenizer, record.question, len(record.images))
    counts.append(int(runner.realize(prompt, model.config).image_mask.sum()))
  return counts


def test_mmmu_pro_standard(sharp_setup, tmp_path):
  model, params, tokenizer = sharp_setup
  task, records, result = run(sharp_setup, "mmmu_pro_standard", write(tmp_path / "test.parquet", STANDARD), tmp_path / "o")
  docs = STANDARD[:4]
  counts = check_prompts(sharp_setup, records, [lmms_mmmu_pro_text(d) for d in docs], [lmms_mmmu_pro_visual(d) for d in docs])
  patches = model.config.vision.num_patches
  # Several images: 729 tokens each, no newline; one image: anyres, as upstream.
  assert counts == [2 * patches, 1485, 3 * patches, 0]
  (failed,) = result.summary["failed"]
  assert failed["id"] == "test_Art_4" and "column 'image_2'" in failed["error"] and "<image 2>" in failed["error"]
  for n, (sample, doc) in enumerate(zip(result.samples, docs)):
    if n in (0, 2):  # the decode itself, for the multi-image rows
      assert sample["prediction"] == common.reference_answer(model, params, tokenizer, lmms_mmmu_pro_text(doc),
                                                             lmms_mmmu_pro_visual(doc), 2, 2, 2)
    assert sample["score"] == float(sample["parsed"] == doc["answer"])


def test_mmmu_pro_vision(sharp_setup, tmp_path):
  model, params, tokenizer = sharp_setup
  task, records, result = run(sharp_setup, "mmmu_pro_vision", write(tmp_path / "test.parquet", VISION), tmp_path / "o")
  prompt_text = "Answer with the option letter from the given choices directly."
  counts = check_prompts(sharp_setup, records, [prompt_text] * 3, [[SCREENSHOT]] * 3)
  assert counts == [1485] * 3
  assert result.samples[0]["prediction"] == common.reference_answer(model, params, tokenizer, prompt_text,
                                                                    [SCREENSHOT], 2, 2, 2)
  for sample, doc in zip(result.samples, VISION):
    assert sample["score"] == float(sample["prediction"] == doc["answer"])  # the raw answer is the choice


def test_muirbench_batched_and_resumed(sharp_setup, tmp_path):
  model, params, tokenizer = sharp_setup
  path = write(tmp_path / "test.parquet", MUIR)
  _, _, full = run(sharp_setup, "muirbench", path, tmp_path / "full")

  class Stop(Exception):
    pass

  def stop_after(n):
    if n == 1:
      raise Stop
  with pytest.raises(Stop):
    run(sharp_setup, "muirbench", path, tmp_path / "cut", after_batch=stop_after)
  task, records, resumed = run(sharp_setup, "muirbench", path, tmp_path / "cut")
  assert (tmp_path / "cut" / "results.jsonl").read_bytes() == (tmp_path / "full" / "results.jsonl").read_bytes()
  assert resumed.summary["metrics"] == full.summary["metrics"]

  docs = MUIR[:3]
  counts = check_prompts(sharp_setup, records, [lmms_muir_text(d) for d in docs],
                         [[i["bytes"] for i in d["image_list"]] for d in docs])
  assert counts == [2 * model.config.vision.num_patches, 3 * model.config.vision.num_patches,
                    2 * model.config.vision.num_patches]
  (failed,) = full.summary["failed"]
  assert failed["id"] == "3" and "2 <image>" in failed["error"] and "3 images" in failed["error"]
  for sample, doc in zip(full.samples, docs):
    pictures = [i["bytes"] for i in doc["image_list"]]
    think = None if "<image>" in lmms_muir_text(doc) else "no_think"
    assert sample["prediction"] == common.reference_answer(model, params, tokenizer, lmms_muir_text(doc), pictures,
                                                           2, 2, 2, think=think)
    assert sample["score"] == muir_score(sample["prediction"], doc["answer"])
  scores = [s["score"] for s in full.samples[:3]]
  assert full.summary["metrics"]["accuracy"] == pytest.approx(sum(scores) / 3)
  assert full.summary["breakdown"]["task"]["Counting"] == {"score": (scores[0] + scores[2]) / 2, "count": 2}
  json.dumps(full.summary)


def test_scores_and_aggregation_by_hand():
  standard, vision, muir = get_task("mmmu_pro_standard"), get_task("mmmu_pro_vision"), get_task("muirbench")
  from lladav_jax.eval.tasks.base import Record
  record = Record(0, "test_Art_1", "", (), "C", {"options": TEN, "subject": "Art"})
  # MMMU parsing: "(C)" first, then "C ", then "C."; a bare letter; option text only for long answers.
  assert standard.score(record, "The answer is (C).") == {"parsed": "C", "score": 1.0}
  assert standard.score(record, "B") == {"parsed": "B", "score": 0.0}
  assert standard.score(record, "the right one is option c for sure") == {"parsed": "C", "score": 1.0}
  assert standard.score(record, "I think so")["parsed"] == "I"  # "I " names option I
  guess = standard.score(record, "no idea")["parsed"]
  assert guess in "ABCDEFGHIJ" and standard.score(record, "no idea")["parsed"] == guess  # seeded by the id
  plain = Record(0, "v", "", (), "A", {"subject": "Art"})
  assert [vision.score(plain, p)["score"] for p in ("A", "(A)", "a", "A is right")] == [1.0, 0.0, 0.0, 0.0]
  letter = Record(0, "m", "", (), "B", {})
  assert [muir.score(letter, p)["score"] for p in ("B", "b", "B. two", " B.", "The answer is B", "(B)")] == \
         [1.0, 1.0, 1.0, 1.0, 0.0, 0.0]

  # mmmu_pro_aggregate_results: subjects, then domains at instance level, then overall over all subjects.
  results = [{"meta": {"subject": s}, "score": v} for s, v in
             [("Art", 1.0), ("Art", 1.0), ("Music", 0.0), ("Math", 1.0), ("Physics", 0.0), ("Sculpture", 0.0)]]
  summary = standard.summarize(results)
  assert summary["metrics"]["accuracy"] == pytest.approx(3 / 6)
  assert summary["breakdown"]["domain"] == {"Art and Design": {"score": pytest.approx(2 / 3), "count": 3},
                                            "Science": {"score": 0.5, "count": 2}}
  assert summary["breakdown"]["subject"]["Art"] == {"score": 1.0, "count": 2}
  assert vision.summarize(results) == summary
  # muir_aggregation: overall accuracy; per task as it prints them.
  results = [{"meta": {"task": t, "image_relation": "r", "image_type": "x"}, "score": v} for t, v in
             [("Counting", 1.0), ("Counting", 0.0), ("Ordering", 1.0), ("Ordering", 1.0)]]
  summary = muir.summarize(results)
  assert summary["metrics"]["accuracy"] == 0.75
  assert summary["breakdown"]["task"] == {"Counting": {"score": 0.5, "count": 2},
                                          "Ordering": {"score": 1.0, "count": 2}}

"""Video benchmarks end to end on tiny local copies of their real layouts (VideoMME's parquet and
`data/` folder, MLVU's release `json/` + `video/` folders and lmms-eval's MLVU table, SEED-Bench's
video rows), through the batched, resumable runner with a tiny random LLaDA-V.

Checked against lmms-eval's rules written out here: each prompt's exact text, the frames and image
tokens upstream's wrapper gives a video (np.linspace frames, 14 x 14 pooled frames with a newline per
row) or SEED-Bench's frame list (several images: 729 tokens each, no newline), every prediction
against a reference decode of upstream's prompt, and the scores by hand.
"""

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lladav_jax.eval import bucketing, evaluate, get_task, load_task_records, metrics, runner
from lladav_jax.eval.tasks import Record
from lladav_jax.images.feature_layout import NEWLINE
from lladav_jax.images.video import VideoSettings
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID
from tests import tiny
from tests.eval import common

VIDEO = VideoSettings(max_frames=4)  # few frames keep the tiny decodes fast
POOLED_ROW = 14  # ceil(27 / 2) pooled features per row, then the newline ("grid")


def upstream_video_tokens(total_frames: int, max_frames: int) -> int:
  """Image tokens of one video question in upstream's evaluation (decord frames, grid newlines)."""
  frames = len(np.linspace(0, total_frames - 1, max_frames, dtype=int))
  return frames * POOLED_ROW * (POOLED_ROW + 1)


class Interrupt(Exception):
  pass


def run_resumed(setup, task, records, failures, tmp_path, batch_size=2):
  """An uninterrupted run and one stopped after its first batch and resumed: they must agree."""
  model, params, tokenizer = setup
  kwargs = dict(failures=failures, batch_size=batch_size, progress=False, log=None, video_settings=VIDEO)
  full = evaluate(model, params, tokenizer, task, records, output_dir=str(tmp_path / "full"), **kwargs)

  def stop(n):
    raise Interrupt
  with pytest.raises(Interrupt):
    evaluate(model, params, tokenizer, task, records, output_dir=str(tmp_path / "cut"), after_batch=stop, **kwargs)
  resumed = evaluate(model, params, tokenizer, task, records, output_dir=str(tmp_path / "cut"), **kwargs)
  assert (tmp_path / "cut" / "results.jsonl").read_bytes() == (tmp_path / "full" / "results.jsonl").read_bytes()
  assert resumed.summary == json.loads((tmp_path / "cut" / "summary.json").read_text()) | {
      "throughput": resumed.summary["throughput"]}
  assert resumed.summary["video"] == {"max_frames": 4, "frame_rule": "decord", "token_strategy": "single",
                                      "pool_mode": "bilinear"}
  return full


def check_predictions(setup, records, result, frame_counts):
  """Every prediction is the reference decode; every prompt plans upstream's image-token count."""
  model, params, tokenizer = setup
  by_index = {s["index"]: s for s in result.samples}
  for record in records:
    total = frame_counts[record.video]
    indices = np.linspace(0, total - 1, VIDEO.max_frames, dtype=int).tolist()
    prompt = bucketing.probe(record, tokenizer, model.config, "no_think", video_settings=VIDEO)
    assert prompt.frames == tuple(indices) and prompt.crops == VIDEO.max_frames
    assert prompt.length - (len(prompt.ids) - 1) == upstream_video_tokens(total, VIDEO.max_frames)
    sample = by_index[record.index]
    assert sample["prediction"] == common.reference_video_answer(model, params, tokenizer, record.question,
                                                                 record.video, indices, 2, 2, 2)


# --- VideoMME ---

OPTION_PROMPT = ("Select the best answer to the following multiple-choice question based on the video and the "
                 "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
LETTER = "Answer with the option's letter from the given choices directly."


def videomme_row(video_id, question_id, duration, domain, task_type, answer):
  return dict(video_id="001", duration=duration, domain=domain, sub_category="Astronomy", url="https://x",
              videoID=video_id, question_id=question_id, task_type=task_type, question=f"What happens in {video_id}?",
              options=["A. It rains.", "B. It snows.", "C. Sun.", "D. Wind."], answer=answer)


@pytest.fixture
def videomme(tmp_path):
  """Video-MME as released: videomme/test-*.parquet, the videos in data/ beside that folder."""
  (tmp_path / "videomme").mkdir()
  (tmp_path / "data").mkdir()
  tiny.write_video(tmp_path / "data" / "fJ9rUzIMcZQ.mp4", 9)
  tiny.write_video(tmp_path / "data" / "AbC.MP4", 3)  # found under lmms-eval's second spelling
  rows = [videomme_row("fJ9rUzIMcZQ", "001-1", "short", "Knowledge", "Counting Problem", "A"),
          videomme_row("fJ9rUzIMcZQ", "001-2", "short", "Knowledge", "OCR Problems", "C"),
          videomme_row("AbC", "002-1", "long", "Sports Competition", "Counting Problem", "B"),
          videomme_row("missing", "003-1", "medium", "Knowledge", "OCR Problems", "D")]
  path = tmp_path / "videomme" / "test-00000-of-00001.parquet"
  pq.write_table(pa.Table.from_pylist(rows), path)
  return path, {str(tmp_path / "data" / "fJ9rUzIMcZQ.mp4"): 9, str(tmp_path / "data" / "AbC.MP4"): 3}


def test_videomme_end_to_end(setup, videomme, tmp_path):
  path, frame_counts = videomme
  task = get_task("videomme")
  records, failures = load_task_records(task, [str(path)])
  assert [r.question for r in records][0] == (
      f"{OPTION_PROMPT}\nWhat happens in fJ9rUzIMcZQ?\nA. It rains.\nB. It snows.\nC. Sun.\nD. Wind.\n\n{LETTER}")
  first, second = str(tmp_path / "data" / "fJ9rUzIMcZQ.mp4"), str(tmp_path / "data" / "AbC.MP4")
  assert [(r.id, r.target, r.video) for r in records] == [("001-1", "A", first), ("001-2", "C", first),
                                                          ("002-1", "B", second)]
  assert records[2].meta == {"duration": "long", "domain": "Sports Competition", "sub_category": "Astronomy",
                             "task_type": "Counting Problem"}
  (failure,) = failures
  assert "video missing.mp4 not found" in failure["error"] and "row 3 column 'videoID'" in failure["error"]

  result = run_resumed(setup, task, records, failures, tmp_path)
  check_predictions(setup, records, result, frame_counts)
  scored = [s for s in result.samples if "error" not in s]
  for s in scored:
    assert s["score"] == float(metrics.videomme_choice(s["prediction"]) == s["target"])
  summary = result.summary
  assert summary["num_scored"] == 3 and summary["num_failed"] == 1
  assert summary["metrics"]["accuracy"] == pytest.approx(sum(s["score"] for s in scored) / 3)
  assert summary["breakdown"]["duration"]["short"]["count"] == 2
  assert summary["breakdown"]["task_type"]["Counting Problem"]["score"] == pytest.approx(
      (scored[0]["score"] + scored[2]["score"]) / 2)


def test_videomme_answers_and_summary_by_hand():
  task = get_task("videomme")
  for prediction, parsed in (("The best answer is C", "C"), ("(B) It snows", "B"), ("answer: D.", "D"),
                             ("I cannot tell from the frames of this short clip what is going on here", ""),
                             ("none", "")):
    assert metrics.videomme_choice(prediction) == parsed
  results = [{"score": s, "meta": {"duration": d, "domain": "K", "sub_category": "S", "task_type": t}}
             for s, d, t in ((1.0, "short", "a"), (0.0, "short", "b"), (1.0, "long", "a"), (1.0, "long", "a"))]
  summary = task.summarize(results)
  assert summary["metrics"]["accuracy"] == 0.75
  assert summary["breakdown"]["duration"] == {"long": {"score": 1.0, "count": 2}, "short": {"score": 0.5, "count": 2}}
  assert summary["breakdown"]["task_type"]["a"] == {"score": 1.0, "count": 3}


# --- MLVU ---

POST = "\nOnly give the best option.\nBest option: ("


@pytest.fixture
def mlvu_release(tmp_path):
  """MLVU's release: json/<n>_<task>.json and video/<n>_<task>/; the generation tasks are skipped."""
  root = tmp_path / "MLVU"
  for folder in ("json", "video/1_plotQA", "video/2_needle"):
    (root / folder).mkdir(parents=True)
  tiny.write_video(root / "video/1_plotQA/movie1.mp4", 6)
  tiny.write_video(root / "video/2_needle/needle_3.mp4", 11)
  plot = [{"video": "movie1.mp4", "duration": 300, "question": "What colour is the car?",
           "candidates": ["red", "blue", "green", "black"], "answer": "green", "question_type": "plotQA"},
          {"video": "movie1.mp4", "duration": 300, "question": "Who drives?", "candidates": ["a man", "a dog"],
           "answer": "a man", "question_type": "plotQA"}]
  needle = [{"video": "needle_3.mp4", "duration": 500, "question": "What is hidden?", "candidates": ["a key", "a pen"],
             "answer": "a pen", "question_type": "findNeedle"},
            {"video": "needle_3.mp4", "duration": 500, "question": "Broken?", "candidates": ["yes", "no"],
             "answer": "maybe", "question_type": "findNeedle"}]
  summary = [{"video": "movie1.mp4", "duration": 300, "question": "Summarise the video.", "answer": "A film.",
              "question_type": "summary"}]
  for name, rows in (("1_plotQA", plot), ("2_needle", needle), ("9_summary", summary)):
    (root / "json" / f"{name}.json").write_text(json.dumps(rows))
  return root, {str(root / "video/1_plotQA/movie1.mp4"): 6, str(root / "video/2_needle/needle_3.mp4"): 11}


def test_mlvu_release_end_to_end(setup, mlvu_release, tmp_path):
  root, frame_counts = mlvu_release
  task = get_task("mlvu_dev")
  records, failures = load_task_records(task, [str(root / "json")])
  assert [r.question for r in records] == [
      "What colour is the car?\n(A) red\n(B) blue\n(C) green\n(D) black\n" + POST,
      "Who drives?\n(A) a man\n(B) a dog\n" + POST, "What is hidden?\n(A) a key\n(B) a pen\n" + POST]
  assert [(r.id, r.target, r.meta["task_type"]) for r in records] == [
      ("1_plotQA/0", "C", "plotQA"), ("1_plotQA/1", "A", "plotQA"), ("2_needle/0", "B", "needle")]
  (failure,) = failures  # the summary task's row is not read at all
  assert "'maybe' is not one of the candidates" in failure["error"]

  result = run_resumed(setup, task, records, failures, tmp_path)
  check_predictions(setup, records, result, frame_counts)
  scored = [s for s in result.samples if "error" not in s]
  for s in scored:
    assert s["score"] == float(metrics.mlvu_choice(s["prediction"]) == s["target"])
  plot_acc = (scored[0]["score"] + scored[1]["score"]) / 2
  # lmms-eval's m_avg: the mean over its seven task types, types without questions counting 0
  assert result.summary["metrics"]["m_avg"] == pytest.approx((plot_acc + scored[2]["score"]) / 7)


def test_mlvu_lmms_eval_table_and_scoring(setup, tmp_path):
  """lmms-eval's MLVU_dev table: the question holds its options, the answer is a letter."""
  (tmp_path / "videos").mkdir()
  tiny.write_video(tmp_path / "videos" / "ego_2.mp4", 5)
  rows = [dict(video_name="ego_2.mp4", duration=100.0, question="Where am I?\n(A) home\n(B) work\n",
               candidates=["home", "work"], answer="B", task_type="ego", question_id="Q7"),
          dict(video_name="ego_2", duration=100.0, question="When?\n(A) now\n(B) later\n",
               candidates=["now", "later"], answer="A", task_type="ego", question_id="Q8")]
  path = tmp_path / "test-00000-of-00001.parquet"
  pq.write_table(pa.Table.from_pylist(rows), path)
  task = get_task("mlvu_dev", video_folder=str(tmp_path / "videos"))
  records, failures = load_task_records(task, [str(path)])
  assert not failures
  assert [(r.id, r.question, r.target, r.video) for r in records] == [
      ("Q7", "Where am I?\n(A) home\n(B) work\n" + POST, "B", str(tmp_path / "videos" / "ego_2.mp4")),
      ("Q8", "When?\n(A) now\n(B) later\n" + POST, "A", str(tmp_path / "videos" / "ego_2.mp4"))]
  for prediction, parsed in (("B)", "B"), ("B) work", "B"), ("(A)", "A"), (")A", ""), ("A", "A"), (" work ", "work")):
    assert metrics.mlvu_choice(prediction) == parsed
  results = [{"score": s, "meta": {"task_type": t}} for s, t in ((1.0, "ego"), (0.0, "ego"), (1.0, "count"))]
  assert task.summarize(results)["metrics"] == {"m_avg": pytest.approx(1.5 / 7), "accuracy": pytest.approx(2 / 3)}
  with pytest.raises(ValueError, match="has no videos"):
    get_task("mmstar", video_folder=str(tmp_path))


# --- SEED-Bench's video rows ---

def test_seedbench_video_rows_are_several_images(setup, tmp_path):
  """lmms-lab/SEED-Bench's video questions hold their frames as a list of images; upstream's wrapper
  treats them as several images (aspect ratio "pad", one stacked tensor): one placeholder and 729
  tokens per frame, no image newline; seed_video scores them."""
  model, params, tokenizer = setup
  frames = [common.png_bytes(32, 24, seed=s) for s in range(5)]  # (the tiny model holds 4096 tokens)
  rows = [dict(question_id="v1", question="What happens?", choice_a="a", choice_b="b", choice_c="c", choice_d="d",
               answer="B", data_type="video", image=[{"bytes": f, "path": None} for f in frames]),
          dict(question_id="i1", question="What is it?", choice_a="a", choice_b="b", choice_c="c", choice_d="d",
               answer="A", data_type="image", image=[{"bytes": frames[0], "path": None}])]
  path = tmp_path / "test.parquet"
  pq.write_table(pa.Table.from_pylist(rows), path)
  task = get_task("seedbench")
  records, _ = load_task_records(task, [str(path)])
  video_record = records[0]
  prompt = bucketing.probe(video_record, tokenizer, model.config, "no_think")
  assert prompt.ids.count(IMAGE_PLACEHOLDER_ID) == 5 and prompt.crops == 5
  sample = runner.realize(prompt, model.config)
  assert int(sample.image_mask.sum()) == 5 * 729
  assert not (sample.image_index[sample.image_mask] == NEWLINE).any()

  result = evaluate(model, params, tokenizer, task, records, batch_size=2, progress=False, log=None)
  for record, s in zip(records, result.samples):
    assert s["prediction"] == common.reference_answer(model, params, tokenizer, record.question, list(record.images),
                                                      2, 2, 2)
  video, image = result.samples
  assert result.summary["metrics"]["seed_video"] == float(metrics.seed_choice(video["prediction"]) == "B")
  assert result.summary["metrics"]["seed_image"] == float(metrics.seed_choice(image["prediction"]) == "A")


def test_default_frames_are_planned_from_the_header(setup, tmp_path):
  """32 frames by default (decord: repeated in a 7-frame video), planned without decoding a pixel."""
  model, _, tokenizer = setup
  path = tiny.write_video(tmp_path / "short.mp4", 7)
  prompt = bucketing.probe(Record(0, "r", "Q?", (), "A", video=str(path)), tokenizer, model.config, None)
  assert prompt.frames == tuple(np.linspace(0, 6, 32, dtype=int).tolist())
  assert prompt.length - (len(prompt.ids) - 1) == 32 * 14 * 15
  pyav = bucketing.probe(Record(0, "r", "Q?", (), "A", video=str(path)), tokenizer, model.config, None,
                         video_settings=VideoSettings(frame_rule="pyav"))
  assert pyav.frames == tuple(range(7))

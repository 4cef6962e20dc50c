"""Video benchmarks: VideoMME and MLVU (dev, multiple choice). Prompts and answer rules are
lmms-eval's (tasks/videomme, tasks/mlvu); decoding is LLaDA-V's multiple-choice setting (2 tokens,
2 steps, /no_think). A record names its video file; the runner reads its frames as upstream's
evaluation wrapper does (`images.video`).

Videos are looked for in `video_folder` when given, else beside the data files as the benchmarks
are released (VideoMME: `data/` next to or above the parquet's folder; MLVU: `video/<task>/` next
to the `json/` folder, or the parquet's own folder).
"""

import os
import re
from collections import defaultdict

from lladav_jax.eval import metrics
from lladav_jax.eval.readers import DataError, Row
from lladav_jax.eval.tasks.base import Record, RecordError, Task, breakdown, mean_score, string_list, text
from lladav_jax.eval.tasks.choice import LETTER_PROMPT


def find_video(row: Row, column: str, names: list[str], folders: list[str]) -> str:
  """The first of `names` that exists in one of `folders` (in that order)."""
  for folder in folders:
    for name in names:
      path = os.path.join(folder, name)
      if os.path.isfile(path):
        return path
  raise RecordError(f"{row.where(column)}: video {names[0]} not found in {', '.join(folders)}")


class VideoTask(Task):
  """A task whose records carry a video; `video_folder` overrides where the files are looked for."""

  def __init__(self, video_folder: str | None = None):
    self.video_folder = None if video_folder is None else os.path.expanduser(video_folder)


class VideoMME(VideoTask):
  name = "videomme"
  required_columns = ("videoID", "question_id", "duration", "domain", "sub_category", "task_type", "question",
                      "options", "answer")
  description = "Video-MME (frames only, no subtitles)"

  OPTION_PROMPT = ("Select the best answer to the following multiple-choice question based on the video and the "
                   "subtitles. Respond with only the letter (A, B, C, or D) of the correct option.")
  POST_PROMPT = "\n" + LETTER_PROMPT  # lmms-eval's default post_prompt

  def record(self, row, index):
    question = "\n".join([self.OPTION_PROMPT, text(row, "question"), *string_list(row, "options"), self.POST_PROMPT])
    video_id = text(row, "videoID")
    here = os.path.dirname(os.path.abspath(row.source))
    folders = [self.video_folder] if self.video_folder else [os.path.join(here, "data"),
                                                             os.path.join(os.path.dirname(here), "data"), here]
    # lmms-eval's order of file names
    video = find_video(row, "videoID", [f"{video_id}.mp4", f"{video_id}.MP4", f"{video_id}.mkv"], folders)
    meta = {field: text(row, field) for field in ("duration", "domain", "sub_category", "task_type")}
    return Record(index, text(row, "question_id"), question, (), text(row, "answer"), meta, video=video)

  def score(self, record, prediction):
    parsed = metrics.videomme_choice(prediction)
    return {"parsed": parsed, "score": float(parsed == record.target)}

  def summarize(self, results):
    return {"metrics": {"accuracy": mean_score(results)},
            "breakdown": {field: breakdown(results, field) for field in ("duration", "domain", "sub_category",
                                                                         "task_type")}}


class MLVU(VideoTask):
  """MLVU dev's multiple-choice tasks, from MLVU's release (`json/<n>_<task>.json`: video, question,
  candidates, answer text; videos in `video/<n>_<task>/`) or from lmms-eval's table (video_name,
  question with its options, answer letter, task_type)."""

  name = "mlvu_dev"
  description = "MLVU dev (multiple-choice tasks; m_avg averages the seven task types)"
  TASK_TYPES = ("anomaly_reco", "count", "ego", "needle", "order", "plotQA", "topic_reasoning")
  POST_PROMPT = "\nOnly give the best option.\nBest option: ("
  _RELEASE_COLUMNS = ("video", "question", "candidates", "answer")
  _TABLE_COLUMNS = ("video_name", "question", "answer", "task_type")

  @staticmethod
  def _release_task(row: Row) -> str | None:
    """The task of a row from MLVU's release: its file's name without the number ("2_needle.json")."""
    stem = os.path.splitext(os.path.basename(row.source))[0]
    return re.sub(r"^\d+_", "", stem) if row.source.endswith(".json") else None

  def keeps(self, row):
    # MLVU's release also holds the generation tasks (sub_scene, summary), which are not multiple choice.
    task = self._release_task(row)
    return task is None or task in self.TASK_TYPES

  def check_columns(self, row):
    columns = self._RELEASE_COLUMNS if self._release_task(row) else self._TABLE_COLUMNS
    missing = [c for c in columns if c not in row.values]
    if missing:
      raise DataError(f"{row.source}: task {self.name} needs column(s) {missing}; the file has {sorted(row.values)}")

  def record(self, row, index):
    task = self._release_task(row)
    here = os.path.dirname(os.path.abspath(row.source))
    if task is not None:
      candidates = string_list(row, "candidates")
      answer = text(row, "answer")
      if answer not in candidates:
        raise RecordError(f"{row.where('answer')}: {answer!r} is not one of the candidates")
      # The question as lmms-eval's MLVU table spells it: the options lettered on lines of their own.
      question = text(row, "question") + "\n" + "".join(f"({chr(ord('A') + i)}) {c}\n"
                                                        for i, c in enumerate(candidates))
      target = chr(ord("A") + candidates.index(answer))
      stem = os.path.splitext(os.path.basename(row.source))[0]
      root = self.video_folder or os.path.join(os.path.dirname(here), "video")
      video = find_video(row, "video", [text(row, "video")], [os.path.join(root, stem)])
      record_id = f"{stem}/{row.number}"
    else:
      task, question, target = text(row, "task_type"), text(row, "question"), text(row, "answer")
      name = text(row, "video_name")
      video = find_video(row, "video_name", [name, f"{name}.mp4"], [self.video_folder or here])
      record_id = str(row.values.get("question_id") or f"{task}/{row.number}")
    return Record(index, record_id, question + self.POST_PROMPT, (), target, {"task_type": task}, video=video)

  def score(self, record, prediction):
    parsed = metrics.mlvu_choice(prediction)
    return {"parsed": parsed, "score": float(parsed == record.target)}

  def summarize(self, results):
    # lmms-eval averages the seven task types' accuracies; a type without questions counts as 0.
    scores = defaultdict(list)
    for r in results:
      scores[r["meta"]["task_type"]].append(float(r["score"]))
    m_avg = sum(sum(v) / len(v) for t, v in scores.items() if t in self.TASK_TYPES) / len(self.TASK_TYPES)
    return {"metrics": {"m_avg": m_avg, "accuracy": mean_score(results)},
            "breakdown": {"task_type": breakdown(results, "task_type")}}

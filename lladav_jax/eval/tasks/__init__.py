"""The benchmark tasks by name: `get_task("mmstar")`, `TASKS`, and the generic "jsonl" task.
Video tasks take the folder of their videos: `get_task("videomme", video_folder="~/Video-MME/data")`."""

from lladav_jax.eval.tasks.base import Decoding, Record, RecordError, Task, load_records
from lladav_jax.eval.tasks.choice import AI2D, MMMU, MMBench, MMStar, RealWorldQA, ScienceQA, SeedBench
from lladav_jax.eval.tasks.jsonl import JsonlTask
from lladav_jax.eval.tasks.math import MathVerse, MathVista
from lladav_jax.eval.tasks.mmmu_pro import MMMUProStandard, MMMUProVision
from lladav_jax.eval.tasks.muirbench import MuirBench
from lladav_jax.eval.tasks.open_ended import MME, ChartQA, DocVQA, InfoVQA
from lladav_jax.eval.tasks.video import MLVU, VideoMME, VideoTask

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (
    MMBench, MMStar, SeedBench, AI2D, ScienceQA, RealWorldQA, MMMU, MMMUProStandard, MMMUProVision, MuirBench,
    ChartQA, DocVQA, InfoVQA, MME, MathVista, MathVerse, VideoMME, MLVU, JsonlTask)}


def get_task(name: str, video_folder: str | None = None) -> Task:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; tasks: {', '.join(sorted(TASKS))}")
  if issubclass(TASKS[name], VideoTask):
    return TASKS[name](video_folder)
  if video_folder is not None:
    raise ValueError(f"task {name} has no videos; a video folder applies to {', '.join(video_task_names())}")
  return TASKS[name]()


def video_task_names() -> list[str]:
  return sorted(name for name, cls in TASKS.items() if issubclass(cls, VideoTask))


__all__ = ["Decoding", "JsonlTask", "Record", "RecordError", "TASKS", "Task", "VideoTask", "get_task", "load_records",
           "video_task_names"]

"""The benchmark tasks by name: `get_task("mmstar")`, `TASKS`, and the generic "jsonl" task."""

from lladav_jax.eval.tasks.base import Decoding, Record, RecordError, Task, load_records
from lladav_jax.eval.tasks.choice import AI2D, MMMU, MMBench, MMStar, RealWorldQA, ScienceQA, SeedBench
from lladav_jax.eval.tasks.jsonl import JsonlTask
from lladav_jax.eval.tasks.math import MathVerse, MathVista
from lladav_jax.eval.tasks.mmmu_pro import MMMUProStandard, MMMUProVision
from lladav_jax.eval.tasks.muirbench import MuirBench
from lladav_jax.eval.tasks.open_ended import MME, ChartQA, DocVQA, InfoVQA

TASKS: dict[str, type[Task]] = {cls.name: cls for cls in (
    MMBench, MMStar, SeedBench, AI2D, ScienceQA, RealWorldQA, MMMU, MMMUProStandard, MMMUProVision, MuirBench,
    ChartQA, DocVQA, InfoVQA, MME, MathVista, MathVerse, JsonlTask)}


def get_task(name: str) -> Task:
  if name not in TASKS:
    raise ValueError(f"unknown task {name!r}; tasks: {', '.join(sorted(TASKS))}")
  return TASKS[name]()


__all__ = ["Decoding", "JsonlTask", "Record", "RecordError", "TASKS", "Task", "get_task", "load_records"]

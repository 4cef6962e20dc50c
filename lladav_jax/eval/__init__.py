"""Jitted, batched, sharded and resumable evaluation on LLaDA-V's benchmarks (docs/eval.md).

    python -m lladav_jax.eval --checkpoint DIR --task mmstar --data MMStar/ --output runs/mmstar

or, as a library, `evaluate(model, params, tokenizer, get_task(name), records, ...)`.
"""

from lladav_jax.eval.evaluation import EvalResult, evaluate, load_task_records, summarize
from lladav_jax.eval.readers import DataError, read_rows
from lladav_jax.eval.runner import answer_text, task_settings
from lladav_jax.eval.tasks import TASKS, Decoding, JsonlTask, Record, Task, get_task

__all__ = ["DataError", "Decoding", "EvalResult", "JsonlTask", "Record", "TASKS", "Task", "answer_text", "evaluate",
           "get_task", "load_task_records", "read_rows", "summarize", "task_settings"]

"""Data pipeline throughput: samples/s for anyres_max_4 on 640x480 JPEGs, with 1 and 2 worker processes.

Each sample is one JPEG record (decode, anyres_max_4 crops, feature layout, tokenisation, upstream padding,
collation into fixed-shape batches), read through the whole grain pipeline in one run, after a warm-up
that covers the worker start. Target: >= 50 samples/s with 2 workers on a 2-core machine. Also printed,
per sample and summed over the threads of the main process and the workers: time on a CPU (what the
pipeline costs) and time runnable but waiting for a CPU (other work sharing the cores).
Usage: python bench/data.py [--samples 400 --batch 8 --workers 1,2]
"""

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from lladav_jax import data  # noqa: E402
from tests.data.tiny_tokenizer import save_tokenizer_dir  # noqa: E402
from tests.tiny import LLADAV, random_image  # noqa: E402

# Real crop geometry (384 px, 729 tokens per crop) and the real vocabulary size; widths do not matter here.
CONFIG = dataclasses.replace(LLADAV, text=dataclasses.replace(LLADAV.text, vocab_size=126464), max_length=8192,
                             image_aspect_ratio="anyres_max_4")


def write_dataset(root: str, count: int) -> str:
  images = os.path.join(root, "images")
  os.makedirs(images)
  distinct = 16  # distinct JPEG files, reused so that writing them does not dominate the setup
  for i in range(distinct):
    random_image(640, 480, seed=i).save(os.path.join(images, f"{i}.jpg"), quality=90)
  records = [{"id": str(i), "image": f"{i % distinct}.jpg",
              "conversations": [{"from": "human", "value": "<image>\nWhat is in this picture?"},
                                {"from": "gpt", "value": "A red cat on a blue mat, next to the dog."}]}
             for i in range(count)]
  path = os.path.join(root, "data.json")
  with open(path, "w") as f:
    json.dump(records, f)
  return path, images


def cpu_and_wait_seconds() -> tuple[float, float]:
  """(seconds on a CPU, seconds runnable but waiting for one) of every thread of this process and its
  live children (the data workers), from /proc/<pid>/task/<tid>/schedstat."""
  run = wait = 0.0
  for entry in os.listdir("/proc"):
    if not entry.isdigit():
      continue
    try:
      with open(f"/proc/{entry}/stat") as f:
        parent = int(f.read().rsplit(")", 1)[1].split()[1])
      if int(entry) != os.getpid() and parent != os.getpid():
        continue
      for tid in os.listdir(f"/proc/{entry}/task"):
        with open(f"/proc/{entry}/task/{tid}/schedstat") as f:
          on_cpu, waiting, _ = f.read().split()
        run, wait = run + int(on_cpu) / 1e9, wait + int(waiting) / 1e9
    except OSError:  # a thread or process that ended meanwhile
      continue
  return run, wait


def samples_per_second(path: str, images: str, tokenizer: data.Tokenizer, workers: int, batch: int,
                       samples: int) -> tuple[float, float, float]:
  """(samples/s, CPU seconds per sample and seconds waiting for a CPU per sample, over the main process
  and the workers)."""
  config = data.DataConfig(sources=(data.SourceSpec(path, image_folder=images),), batch_size=batch, num_workers=workers,
                           seq_len_buckets=(2048, 4096, 8192), crop_buckets=(10, 40), num_epochs=None)
  iterator = data.make_data_iterator(config, CONFIG, tokenizer, shard_index=0, shard_count=1)
  try:
    for _ in range(2):  # warm-up: worker start, first imports
      next(iterator)
    steps = max(1, samples // batch)
    start, (cpu, wait) = time.perf_counter(), cpu_and_wait_seconds()
    for _ in range(steps):
      next(iterator)
    elapsed, (cpu_end, wait_end) = time.perf_counter() - start, cpu_and_wait_seconds()
    count = steps * batch
    return count / elapsed, (cpu_end - cpu) / count, (wait_end - wait) / count
  finally:
    iterator.close()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--samples", type=int, default=400)
  parser.add_argument("--batch", type=int, default=8)
  parser.add_argument("--workers", default="1,2")
  args = parser.parse_args()
  with tempfile.TemporaryDirectory() as root:
    path, images = write_dataset(root, 1000)
    tokenizer = data.Tokenizer.from_dir(save_tokenizer_dir(os.path.join(root, "tokenizer")))
    load = os.getloadavg()[0]
    print(f"anyres_max_4, 640x480 JPEG, batch {args.batch}, {args.samples} samples timed, {os.cpu_count()} CPUs, "
          f"load average {load:.1f} before the run")
    for workers in (int(w) for w in args.workers.split(",")):
      rate, cpu, wait = samples_per_second(path, images, tokenizer, workers, args.batch, args.samples)
      print(f"workers={workers}: {rate:.1f} samples/s ({1000 * cpu:.1f} ms on a CPU and {1000 * wait:.1f} ms "
            "waiting for one per sample, all threads)")


if __name__ == "__main__":
  main()

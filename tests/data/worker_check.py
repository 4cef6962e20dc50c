"""A process that reads the pipeline with two worker processes, then waits to be killed.

Run by test_workers.py: python -m tests.data.worker_check DATA TOKENIZER
Prints one JSON line once the first batch is read: its own pid, the workers' and the resource tracker's.
"""

import json
import multiprocessing
import os
import sys
import time
from multiprocessing import resource_tracker

os.environ.setdefault("JAX_PLATFORMS", "cpu")

from lladav_jax.data import DataConfig, SourceSpec, Tokenizer, make_data_iterator  # noqa: E402
from tests.data.conftest import CONFIG  # noqa: E402


def main() -> None:
  data_path, tokenizer_dir = sys.argv[1:]
  config = DataConfig(sources=(SourceSpec(data_path),), batch_size=2, num_workers=2, num_epochs=None,
                      seq_len_buckets=(1024,), crop_buckets=(1,), max_length=1024)
  iterator = make_data_iterator(config, CONFIG, Tokenizer.from_dir(tokenizer_dir), shard_index=0, shard_count=1)
  next(iterator)
  print(json.dumps({"trainer": os.getpid(), "workers": [p.pid for p in multiprocessing.active_children()],
                    "tracker": resource_tracker._resource_tracker._pid}), flush=True)
  time.sleep(600)


if __name__ == "__main__":
  main()

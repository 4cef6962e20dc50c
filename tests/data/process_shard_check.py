"""One of several JAX processes reading the pipeline with its default shard (jax.process_index()).

Run by test_process_shards.py: python -m tests.data.process_shard_check ID COUNT PORT DATA TOKENIZER OUT
Writes the record numbers of this process's batches to OUT (JSON).
"""

import dataclasses
import json
import os
import sys

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

from lladav_jax.data import (DataConfig, SourceSpec, Tokenizer, make_data_iterator,  # noqa: E402
                             pad_to_common_shape)
from tests.data.conftest import CONFIG  # noqa: E402
from tests.data.test_pipeline import _ids_in  # noqa: E402


def main() -> None:
  process_id, count, port, data_path, tokenizer_dir, out = sys.argv[1:]
  jax.distributed.initialize(coordinator_address=f"localhost:{port}", num_processes=int(count),
                             process_id=int(process_id))
  tokenizer = Tokenizer.from_dir(tokenizer_dir)
  config = DataConfig(sources=(SourceSpec(data_path),), batch_size=2, num_workers=0, num_epochs=1, seed=11,
                      seq_len_buckets=(1024,), crop_buckets=(1,), max_length=1024,
                      drop_remainder=False)
  iterator = make_data_iterator(config, CONFIG, tokenizer)  # shard from jax
  ids = [i for batch in iterator for i in _ids_in(batch, tokenizer)]
  iterator.close()
  # Whole batches only (both processes then take the same number of steps), in length buckets that
  # differ between the processes; after agreeing, each step's shapes are the same everywhere.
  config = dataclasses.replace(config, drop_remainder=True, seq_len_buckets=(128, 256, 1024))
  iterator = make_data_iterator(config, CONFIG, tokenizer)
  own, agreed = [], []
  for batch in iterator:
    own.append(batch["input_ids"].shape[1])
    common = pad_to_common_shape(batch, CONFIG)
    agreed.append([common["input_ids"].shape[1], common["pixel_values"].shape[1]])
  iterator.close()
  with open(out, "w") as f:
    json.dump({"process_index": jax.process_index(), "process_count": jax.process_count(), "ids": ids,
               "own_lengths": own, "agreed_shapes": agreed}, f)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main()

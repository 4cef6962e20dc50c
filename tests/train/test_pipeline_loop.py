"""The train loop on lladav_jax.data's grain pipeline: LLaVA-format records in, checkpointed data state,
and a resumed run that reads on from where the first stopped."""

import json

import pytest

from lladav_jax.checkpoints import workdir as checkpointing
from lladav_jax.train import loop
from lladav_jax.train.metrics import read_metrics
from tests.data.tiny_tokenizer import save_tokenizer_dir
from tests.train import common

ANSWERS = ["A cat on the mat.", "A red dog.", "The blue image.", "It is a photo.", "Hi there!", "Hello!"]


def pipeline_config(tmp_path, num_steps):
  records = [{"id": f"r{i}", "conversations": [{"from": "human", "value": "What is this?"},
                                               {"from": "gpt", "value": ANSWERS[i % len(ANSWERS)] * (1 + i % 3)}]}
             for i in range(12)]
  data_file = tmp_path / "data.json"
  data_file.write_text(json.dumps(records))
  config = common.run_config(global_batch_size=2, num_steps=num_steps, data_source="pipeline",
                             tokenizer_dir=save_tokenizer_dir(str(tmp_path / "tokenizer")))
  # The tokenizer has LLaDA's real ids: the model needs the real vocabulary size and special ids.
  config.model.text.vocab_size = 126464
  config.model.tokens.update(dict(bos=126080, eos=126081, mask=126336, start_header=126346, end_header=126347,
                                  eot=126348))
  config.data.update(dict(sources=[dict(path=str(data_file))], seq_len_buckets=(64, 128), crop_buckets=(0,),
                          max_length=128, num_workers=0, prefetch_batches=0, index_dir=str(tmp_path / "index")))
  config.checkpoint.update(dict(every_steps=2, keep=2))
  return config


@pytest.mark.slow  # 27 s; tests/train/test_rejects.py also trains on the data pipeline in the default run
def test_train_on_the_data_pipeline(tmp_path):
  workdir = tmp_path / "run"
  loop.train(pipeline_config(tmp_path, num_steps=2), str(workdir))
  check_metric_files(workdir)
  state = json.loads((workdir / checkpointing.CHECKPOINT_DIR / "2" / "data" / "process_0-of-1.json").read_text())
  assert state, "the pipeline's iterator state is checkpointed"
  metrics = read_metrics(str(workdir / "metrics.jsonl"))
  assert all(m["samples"] == 2 and m["loss"] > 0 for m in metrics.values())


@pytest.mark.slow  # compiles a second plan (another total step count)
def test_a_resumed_run_reads_on(tmp_path):
  workdir = str(tmp_path / "run")
  loop.train(pipeline_config(tmp_path, num_steps=2), workdir)
  logged = loop.train(pipeline_config(tmp_path, num_steps=3), workdir)
  assert sorted(logged) == [3], "the second run resumes at step 3"
  assert sorted(read_metrics(str(tmp_path / "run" / "metrics.jsonl"))) == [1, 2, 3]


def tensorboard_scalars(directory) -> dict[str, list[tuple[int, float]]]:
  """Reads TensorBoard event files (TFRecord framing: length, crc, Event proto, crc)."""
  import struct

  from tensorboardX.proto import event_pb2

  out: dict[str, list] = {}
  for path in sorted(directory.iterdir()):
    data = path.read_bytes()
    offset = 0
    while offset < len(data):
      (length,) = struct.unpack("<Q", data[offset:offset + 8])
      event = event_pb2.Event.FromString(data[offset + 12:offset + 12 + length])
      offset += 12 + length + 4
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def check_metric_files(workdir):
  """The logged metrics reach TensorBoard event files, and the loss plot is a PNG."""
  scalars = tensorboard_scalars(workdir / "tensorboard")
  logged = read_metrics(str(workdir / "metrics.jsonl"))
  assert [s for s, _ in scalars["train/loss"]] == [1, 2]
  assert [v for _, v in scalars["train/loss"]] == [logged[1]["loss"], logged[2]["loss"]]
  assert {"train/learning_rate", "train/grad_norm", "train/tokens_per_second"} <= set(scalars)
  assert (workdir / "loss.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

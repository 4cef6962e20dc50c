"""The streaming safetensors writer produces files that safetensors itself reads back exactly; the
reader reads whole tensors and slices."""

import json

import ml_dtypes
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import save_file

from lladav_jax.convert.safetensors_stream import parse_size, write_shards
from lladav_jax.convert.tensor_dir import TensorDir


def test_streamed_shards_read_back_with_safetensors(tmp_path):
  rng = np.random.default_rng(0)
  tensors = {"a.weight": rng.normal(size=(7, 5)).astype(ml_dtypes.bfloat16),
             "b.bias": rng.normal(size=(3,)).astype(np.float32),
             "c.conv": rng.normal(size=(4, 3, 2, 2)).astype(np.float16),
             "d.scale": rng.normal(size=(1,)).astype(np.float32),
             "e.big": rng.normal(size=(40, 10)).astype(np.float32)}
  specs = [(k, v.shape, {np.dtype(ml_dtypes.bfloat16): "BF16", np.dtype(np.float32): "F32",
                         np.dtype(np.float16): "F16"}[v.dtype]) for k, v in tensors.items()]
  # A transposed (non-contiguous) view goes in as is.
  stream = ((k, v.T.T if k != "a.weight" else np.asfortranarray(v)) for k, v in tensors.items())
  index = write_shards(tmp_path, specs, stream, max_shard_bytes=150)  # [a, b], [c, d], [e]
  files = sorted(set(index["weight_map"].values()))
  assert files == ["model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
                   "model-00003-of-00003.safetensors"]  # e.big (1600 bytes) gets its own shard
  assert index["weight_map"]["e.big"] == files[-1]
  assert index == json.loads((tmp_path / "model.safetensors.index.json").read_text())
  for key, value in tensors.items():
    with safe_open(tmp_path / index["weight_map"][key], framework="numpy") as f:
      got = f.get_tensor(key)
      assert f.metadata() == {"format": "pt"}
    assert got.dtype == value.dtype and got.tobytes() == value.tobytes(), key
  assert index["metadata"]["total_size"] == sum(v.nbytes for v in tensors.values())


def test_writer_refuses_a_stream_that_leaves_the_plan(tmp_path):
  with pytest.raises(ValueError, match="expected a F32\\[2\\], got b"):
    write_shards(tmp_path, [("a", (2,), "F32")], [("b", np.zeros(2, np.float32))], 10**6)


def test_reader_reads_whole_tensors_and_slices(tmp_path):
  x = np.arange(24, dtype=np.float32).reshape(4, 6)
  save_file({"x": x, "y": np.ones(2, np.int8)}, str(tmp_path / "model.safetensors"))
  reader = TensorDir(tmp_path)
  assert reader.problems == [] and sorted(reader.tensors) == ["x", "y"]
  assert reader.tensors["x"].shape == (4, 6) and reader.tensors["y"].dtype == "I8"
  np.testing.assert_array_equal(reader.read("x"), x)
  np.testing.assert_array_equal(reader.read_slice("x", (slice(1, 3), slice(None))), x[1:3])
  assert reader.nbytes == x.nbytes + 2


def test_sizes():
  assert parse_size("5GB") == 5 * 10**9 and parse_size("500MB") == 5 * 10**8
  assert parse_size("1.5GiB") == int(1.5 * 2**30) and parse_size("1234") == 1234
  with pytest.raises(ValueError, match="expected e.g."):
    parse_size("five gigs")

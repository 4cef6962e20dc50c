"""PyTorch `.bin` checkpoints read without torch: every tensor equals torch's own load bit for bit;
a converted `.bin` checkpoint equals the same weights converted from safetensors; pickles that name
anything else are refused before anything runs; damaged files give one clear error."""

import json
import os
import pathlib
import pickle
import subprocess
import sys
import warnings
import zipfile

import ml_dtypes
import numpy as np
import pytest
import torch

from lladav_jax import load_pretrained
from lladav_jax.convert import __main__ as cli
from lladav_jax.convert import operations as convert
from lladav_jax.convert.dtypes import DTYPES
from lladav_jax.convert.tensor_dir import TensorDir
from lladav_jax.convert.torch_zip import TorchFileError, TorchZipFile
from tests import tiny
from tests.convert import checkpoints
from tests.convert.test_import_lladav import _assert_bitwise_equal
from tests.parity.test_lladav_parity import Reference

ROOT = pathlib.Path(__file__).parents[2]


def _bits(tensor: torch.Tensor) -> bytes:
  """A tensor's elements in row-major order, as bytes."""
  tensor = tensor.detach().contiguous().reshape(-1)
  return tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b""


def _state_dict() -> dict[str, torch.Tensor]:
  """Every supported dtype, views of one storage (tied, transposed, sliced, strided, broadcast),
  a parameter, a scalar and an empty tensor."""
  g = torch.Generator().manual_seed(0)
  base = torch.randn(6, 8, generator=g)
  return {
      "f32": torch.randn(3, 4, generator=g), "f16": torch.randn(5, generator=g).half(),
      "bf16": torch.randn(4, 3, generator=g).bfloat16(), "f64": torch.randn(2, 2, generator=g).double(),
      "i64": torch.arange(-3, 4), "i32": torch.arange(5, dtype=torch.int32),
      "i16": torch.arange(5, dtype=torch.int16), "i8": torch.arange(-3, 3, dtype=torch.int8),
      "u8": torch.arange(250, 256, dtype=torch.uint8), "bool": torch.tensor([True, False, True]),
      "u16": torch.tensor([1, 2, 65535], dtype=torch.uint16), "u32": torch.tensor([7, 2**32 - 1], dtype=torch.uint32),
      "u64": torch.tensor([1, 2**63 + 5], dtype=torch.uint64),
      "f8_e4m3": torch.randn(6, generator=g).to(torch.float8_e4m3fn),
      "f8_e5m2": torch.randn(6, generator=g).to(torch.float8_e5m2),
      "base": base, "tied": base, "transposed": base.t(), "rows": base[2:5], "columns": base[:, 1:7:2],
      "element": base[3, 5], "broadcast": torch.randn(3, 1, generator=g).expand(3, 4),
      "bf16_view": torch.randn(4, 6, generator=g).bfloat16()[1:, ::2].t(),
      "param": torch.nn.Parameter(torch.randn(3, generator=g)), "scalar": torch.tensor(3.5),
      "empty": torch.zeros(0, 3),
  }


@pytest.mark.parametrize("protocol", [2, 4])
def test_every_tensor_equals_torch_load_bit_for_bit(tmp_path, protocol):
  torch.save(_state_dict(), tmp_path / "pytorch_model.bin", pickle_protocol=protocol)
  expected = torch.load(tmp_path / "pytorch_model.bin", weights_only=False)
  reader = TensorDir(tmp_path)
  assert reader.problems == [] and sorted(reader.tensors) == sorted(expected)
  dtypes = {"f32": "F32", "f16": "F16", "bf16": "BF16", "f64": "F64", "i64": "I64", "i32": "I32", "i16": "I16",
            "i8": "I8", "u8": "U8", "bool": "BOOL", "u16": "U16", "u32": "U32", "u64": "U64",
            "f8_e4m3": "F8_E4M3", "f8_e5m2": "F8_E5M2"}
  for key, tensor in expected.items():
    got = reader.read(key)
    assert got.shape == tuple(tensor.shape) and reader.tensors[key].shape == got.shape, key
    assert got.tobytes() == _bits(tensor), key
    if key in dtypes:
      assert reader.tensors[key].dtype == dtypes[key]
  assert reader.read("bf16").dtype == ml_dtypes.bfloat16
  # Slices read only what they cover and equal torch's slicing, on views too.
  for key, index in [("base", (slice(1, 4), slice(2, 8))), ("transposed", (slice(3, 7), slice(None, None, 2))),
                     ("columns", (slice(4, 6),)), ("bf16_view", (slice(0, 2), slice(1, 3))), ("rows", (slice(3, 3),))]:
    got = reader.read_slice(key, index)
    assert got.shape == tuple(expected[key][index].shape) and got.tobytes() == _bits(expected[key][index]), key


def test_big_endian_files_are_read_in_native_order(tmp_path):
  """torch.save on a big-endian host records byteorder "big"; rewritten that way here, torch agrees."""
  torch.save(_state_dict(), tmp_path / "little.bin")
  # Each storage's element size: the dtype of the tensors viewing it (torch refuses to mix them).
  itemsize = {ref.storage.key: DTYPES[ref.dtype].itemsize for ref in TorchZipFile(tmp_path / "little.bin").tensors.values()}
  with zipfile.ZipFile(tmp_path / "little.bin") as src, zipfile.ZipFile(tmp_path / "big.bin", "w") as dst:
    for info in src.infolist():
      data = src.read(info)
      name = info.filename.split("/", 1)[1]
      if name == "byteorder":
        data = b"big"
      elif name.startswith("data/") and itemsize[name[5:]] > 1:
        n = itemsize[name[5:]]
        data = np.frombuffer(data, f"<u{n}").astype(f">u{n}").tobytes()
      dst.writestr(info.filename, data)
  expected = torch.load(tmp_path / "little.bin", weights_only=False)
  as_torch_reads_it = torch.load(tmp_path / "big.bin", weights_only=False)
  big = TorchZipFile(tmp_path / "big.bin")
  assert big.big_endian
  for key, tensor in expected.items():
    # torch swaps by the storage's dtype, which for the untyped storages of uint16/32/64 is uint8: it
    # leaves those unswapped (wrong); we swap by the tensor's dtype.
    if not big.tensors[key].storage.untyped:
      assert _bits(as_torch_reads_it[key]) == _bits(tensor), key
    assert big.read(key).tobytes() == _bits(tensor), key
  assert big.read_slice("transposed", (slice(1, 3),)).tobytes() == _bits(expected["transposed"][1:3])


def test_sharded_bin_with_index_equals_torch_load(tmp_path):
  state = {k: v.detach().numpy() for k, v in _state_dict().items()
           if v.dtype in (torch.float32, torch.float16, torch.int64) and v.ndim}
  checkpoints.write_sharded(tmp_path, state, {}, shards=3, fmt="bin")
  index = json.loads((tmp_path / "pytorch_model.bin.index.json").read_text())["weight_map"]
  reader = TensorDir(tmp_path)
  assert reader.problems == [] and len(reader.files) == 3
  for key, name in index.items():
    assert reader.tensors[key].file.name == name
    assert reader.read(key).tobytes() == _bits(torch.load(tmp_path / name, weights_only=False)[key]), key
  # The index and the shards must agree, as for safetensors.
  (tmp_path / "pytorch_model-00002-of-00003.bin").unlink()
  problems = TensorDir(tmp_path).problems
  assert len(problems) == 1 and "pytorch_model-00002-of-00003.bin: listed in pytorch_model.bin.index.json" in problems[0]


def test_safetensors_win_and_non_weight_bin_files_are_not_read(tmp_path):
  torch.save({"a": torch.ones(2)}, tmp_path / "pytorch_model.bin")
  checkpoints.write_sharded(tmp_path, {"b": np.zeros(2, np.float32)}, {}, shards=1)
  assert sorted(TensorDir(tmp_path).tensors) == ["b"]  # safetensors first, as transformers chooses
  other = tmp_path / "other"
  other.mkdir()
  torch.save({"x": torch.ones(1)}, other / "training_args.bin")
  reader = TensorDir(other)
  assert reader.tensors == {} and "(its training_args.bin are not read as weights)" in reader.problems[0]


@pytest.fixture(scope="module")
def bf16_state():
  return checkpoints.bf16(checkpoints.lladav_state(Reference()))


def test_bin_checkpoint_converts_to_the_same_params_as_safetensors(bf16_state, tmp_path):
  st = checkpoints.write_lladav(tmp_path / "st", bf16_state)
  binary = checkpoints.write_lladav(tmp_path / "bin", bf16_state, fmt="bin")
  assert not list(binary.glob("*.safetensors"))
  for src in (st, binary):
    assert cli.run(["import", str(src), str(tmp_path / f"{src.name}-ckpt"), "--quiet"]) == 0
  from_bin = load_pretrained(tmp_path / "bin-ckpt").params
  _assert_bitwise_equal(from_bin, load_pretrained(tmp_path / "st-ckpt").params)
  _assert_bitwise_equal(load_pretrained(binary).params, from_bin)  # the HF directory loads directly too


def test_assemble_from_bin_equals_assemble_from_safetensors(tmp_path):
  llama, siglip = tiny.hf_llama(tiny.TEXT, seed=1), tiny.hf_siglip(tiny.VISION, seed=2)
  state = checkpoints.original_llada_state(llama)
  checkpoints.write_sharded(tmp_path / "llada-st", state, checkpoints.ORIGINAL_LLADA_CONFIG_JSON, shards=2)
  checkpoints.write_sharded(tmp_path / "llada-bin", state, checkpoints.ORIGINAL_LLADA_CONFIG_JSON, shards=2, fmt="bin")
  siglip.save_pretrained(tmp_path / "siglip-st")
  (tmp_path / "siglip-bin").mkdir()
  siglip.config.save_pretrained(tmp_path / "siglip-bin")
  torch.save(siglip.state_dict(), tmp_path / "siglip-bin" / "pytorch_model.bin")  # as older transformers did
  for fmt in ("st", "bin"):
    convert.assemble(tmp_path / f"llada-{fmt}", tmp_path / f"siglip-{fmt}", tmp_path / f"out-{fmt}", progress=False)
  _assert_bitwise_equal(load_pretrained(tmp_path / "out-bin").params, load_pretrained(tmp_path / "out-st").params)


# ---------------------------------------------------------------------------------------------
# Refusals


class _Runs:
  """Unpickled, this would call os.system (a real torch.load with weights_only=False would run it)."""

  def __init__(self, marker):
    self.marker = marker

  def __reduce__(self):
    return os.system, (f"touch {self.marker}",)


class _Evaluates:
  def __reduce__(self):
    return eval, ("__import__('os').getcwd()",)


@pytest.mark.parametrize("payload, culprit", [
    (lambda marker: {"w": torch.ones(2), "x": _Runs(marker)}, f"{os.system.__module__}.system"),
    (lambda marker: _Runs(marker), f"{os.system.__module__}.system"),
    (lambda marker: {"w": _Evaluates()}, "__builtin__.eval"),  # protocol 2 names builtins so
])
def test_a_pickle_that_calls_anything_else_is_refused_and_nothing_runs(bf16_state, tmp_path, payload, culprit,
                                                                        capsys):
  marker = tmp_path / "it-ran"
  src = checkpoints.write_lladav(tmp_path / "evil", bf16_state, fmt="bin")
  evil = src / "pytorch_model-00002-of-00003.bin"  # one shard of an otherwise good checkpoint
  torch.save(payload(marker), evil)
  with pytest.raises(TorchFileError) as raised:
    TorchZipFile(evil)
  message = str(raised.value)
  assert message.startswith(f"{evil}: data.pkl: refused to load the global {culprit}:"), message
  assert not marker.exists()
  # Through the command line: one problem naming the file and the object, nothing written, nothing run.
  assert cli.run(["import", str(src), str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert "1 problem(s)" in err and f"{evil}: data.pkl: refused to load the global {culprit}" in err
  assert not marker.exists() and not (tmp_path / "out").exists()


def _pickle_in_zip(tmp_path, data: bytes):
  """A zip in torch's layout whose data.pkl is `data`."""
  path = tmp_path / "crafted.bin"
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("crafted/data.pkl", data)
    z.writestr("crafted/byteorder", "little")
  return path


def test_refusals_name_the_file_and_the_object(tmp_path):
  # Hand-written pickles: a global imported by STACK_GLOBAL, a subprocess call, a persistent id torch never writes.
  cases = [
      (pickle.dumps(os.getcwd, protocol=4), "refused to load the global posix.getcwd"),
      (b"\x80\x02csubprocess\ncheck_output\nq\x00(X\x02\x00\x00\x00lsq\x01tq\x02Rq\x03.",
       "refused to load the global subprocess.check_output"),
      (b"\x80\x02X\x03\x00\x00\x00abcQ.", "persistent id 'abc'"),
      # BUILD on the shared objects find_class hands out (a storage class, an allowed function).
      (b"\x80\x02ctorch\nFloatStorage\n}(X\x05\x00\x00\x00dtypeX\x03\x00\x00\x00F64ub.",
       "pickle sets state on _StorageType"),
      (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n}(X\x01\x00\x00\x00aK\x01ub.",
       "pickle sets state on _rebuild_tensor_v2"),
  ]
  for data, culprit in cases:
    with pytest.raises(TorchFileError, match=culprit) as raised:
      TorchZipFile(_pickle_in_zip(tmp_path, data))
    assert "crafted.bin: data.pkl:" in str(raised.value)
  torch.save({"w": torch.ones(2)}, tmp_path / "after.bin")  # the refusals left the allowed objects as they were
  assert TorchZipFile(tmp_path / "after.bin").tensors["w"].dtype == "F32"

  torch.save({"c": torch.ones(2, dtype=torch.complex64)}, tmp_path / "complex.bin")
  with pytest.raises(TorchFileError, match="storage type torch.ComplexFloatStorage is not supported"):
    TorchZipFile(tmp_path / "complex.bin")
  torch.save({"state_dict": {"w": torch.ones(2)}, "epoch": 3}, tmp_path / "nested.bin")
  with pytest.raises(TorchFileError, match="nested dicts \\(under 'state_dict'\\), not a flat state dict"):
    TorchZipFile(tmp_path / "nested.bin")
  torch.save({"w": torch.ones(2), "step": 3}, tmp_path / "mixed.bin")
  with pytest.raises(TorchFileError, match="entries that are not named tensors: 'step' \\(int\\)"):
    TorchZipFile(tmp_path / "mixed.bin")
  torch.save({"w": torch.ones(2)}, tmp_path / "legacy.bin", _use_new_zipfile_serialization=False)
  with pytest.raises(TorchFileError, match="the legacy torch format .* is not read; re-save it"):
    TorchZipFile(tmp_path / "legacy.bin")
  with warnings.catch_warnings():  # torch 2.10+ deprecates TorchScript; such archives still circulate
    warnings.simplefilter("ignore", DeprecationWarning)
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
  with pytest.raises(TorchFileError, match="a TorchScript archive"):
    TorchZipFile(tmp_path / "scripted.pt")


def test_truncated_or_corrupt_files_give_one_clear_error(tmp_path, capsys):
  state = {"a": torch.randn(64, 64), "b": torch.randn(64)}
  torch.save(state, tmp_path / "good.bin")
  data = (tmp_path / "good.bin").read_bytes()

  (tmp_path / "truncated.bin").write_bytes(data[:len(data) // 2])
  problems = TensorDir(tmp_path / "truncated.bin").problems
  assert len(problems) == 1 and "truncated.bin: a corrupt or truncated zip" in problems[0]
  (tmp_path / "empty.bin").write_bytes(b"")
  assert TensorDir(tmp_path / "empty.bin").problems == [f"{tmp_path / 'empty.bin'}: empty file"]

  # A flipped byte in a storage: the CRC-32 check names the tensor when it is read.
  record = TorchZipFile(tmp_path / "good.bin")._records[TorchZipFile(tmp_path / "good.bin").tensors["a"].storage.key]
  corrupt = bytearray(data)
  corrupt[record.data_offset + 100] ^= 0xFF
  (tmp_path / "corrupt.bin").write_bytes(bytes(corrupt))
  with pytest.raises(TorchFileError, match="a: .*/data/0 fails its CRC-32 check \\(corrupt file\\)"):
    TorchZipFile(tmp_path / "corrupt.bin").read("a")
  np.testing.assert_array_equal(TorchZipFile(tmp_path / "corrupt.bin").read("b"), state["b"].numpy())

  # A flipped byte in data.pkl: zip's own CRC check, when opening.
  with zipfile.ZipFile(tmp_path / "good.bin") as z:
    pkl = z.getinfo("good/data.pkl")
  with open(tmp_path / "good.bin", "rb") as f:
    f.seek(pkl.header_offset + 26)
    skip = int.from_bytes(f.read(2), "little") + int.from_bytes(f.read(2), "little")
  corrupt = bytearray(data)
  corrupt[pkl.header_offset + 30 + skip + 5] ^= 0x01
  (tmp_path / "badpickle.bin").write_bytes(bytes(corrupt))
  problems = TensorDir(tmp_path / "badpickle.bin").problems
  assert len(problems) == 1 and "a corrupt or truncated zip (Bad CRC-32 for file 'good/data.pkl')" in problems[0]


def test_a_damaged_shard_is_one_problem_among_the_others(bf16_state, tmp_path, capsys):
  src = checkpoints.write_lladav(tmp_path / "src", bf16_state, fmt="bin")
  shard = src / "pytorch_model-00002-of-00003.bin"
  shard.write_bytes(shard.read_bytes()[:-100])
  assert cli.run(["import", str(src), str(tmp_path / "out")]) == 1
  err = capsys.readouterr().err
  assert "1 problem(s)" in err and f"{shard}: a corrupt or truncated zip" in err
  assert not (tmp_path / "out").exists()
  # With corrupt tensor bytes the files open; the read fails, and nothing is left behind.
  src2 = checkpoints.write_lladav(tmp_path / "src2", bf16_state, shards=1, fmt="bin")
  file = src2 / "pytorch_model-00001-of-00001.bin"
  reader = TorchZipFile(file)
  record = reader._records[reader.tensors["model.norm.weight"].storage.key]
  data = bytearray(file.read_bytes())
  data[record.data_offset] ^= 0xFF
  file.write_bytes(bytes(data))
  with pytest.raises(TorchFileError, match="model.norm.weight: .* fails its CRC-32"):
    convert.import_lladav(src2, tmp_path / "out2", progress=False)
  assert not (tmp_path / "out2").exists() and not list(tmp_path.glob("out2*"))


def test_reading_needs_no_torch(tmp_path):
  torch.save({"w": torch.arange(6.0).reshape(2, 3).t()}, tmp_path / "w.bin")
  code = ("import sys; from lladav_jax.convert.torch_zip import TorchZipFile; "
          f"x = TorchZipFile({str(tmp_path / 'w.bin')!r}).read('w'); "
          "assert x.tolist() == [[0, 3], [1, 4], [2, 5]], x; assert 'torch' not in sys.modules; print('ok')")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       env=dict(os.environ, PYTHONPATH=str(ROOT)))
  assert out.stdout.strip() == "ok", out.stderr

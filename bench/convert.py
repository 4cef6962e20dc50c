"""Peak memory and throughput of weight conversion, on a synthetic bf16 LLaDA-V checkpoint (>= 1 GB).

The checkpoint is generated into a temporary directory (deleted at the end). Each step runs in a
fresh interpreter that takes its resident memory after imports as the baseline, resets the
kernel's peak counter (VmHWM) and reports the peak above the baseline:

  naive       load every shard whole (safetensors.numpy.load_file), build the tree, orbax-save it
  import      python -m tools.convert_weights import: safetensors -> orbax, streamed
  import-bin  the same from the same weights as PyTorch .bin shards (written with torch.save)
  export      python -m tools.convert_weights export: orbax -> safetensors, streamed

Printed side by side: peak RSS above baseline / checkpoint size (target for import, import-bin
and export: <= 1.25), and MB/s of checkpoint converted. The .bin copy needs torch (a test
requirement) only to be written; the conversion reads it without torch. Usage: python bench/convert.py [--text-layers 16]
"""

import argparse
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

TARGET = 1.25


def _status_kb(field: str) -> int:
  for line in pathlib.Path("/proc/self/status").read_text().splitlines():
    if line.startswith(field + ":"):
      return int(line.split()[1])
  raise RuntimeError(f"{field} not in /proc/self/status")


def synthetic_config(text_layers: int):
  from lladav_jax.model_config import LLaDAConfig, LLaDAVConfig, ProjectorConfig, SiglipConfig
  from lladav_jax.tokens import TokenIds
  text = LLaDAConfig(vocab_size=32000, hidden_size=1536, intermediate_size=4608, num_hidden_layers=text_layers,
                     num_attention_heads=12, num_key_value_heads=12)
  vision = SiglipConfig(hidden_size=384, intermediate_size=1536, num_hidden_layers=7, num_attention_heads=6)
  tokens = TokenIds(bos=31990, eos=31991, mask=31995, start_header=31992, end_header=31993, eot=31994)  # in the vocab
  return LLaDAVConfig(text=text, vision=vision, projector=ProjectorConfig("mlp2x_gelu", 384, 1536), max_length=8192,
                      tokens=tokens)


def generate(directory: pathlib.Path, text_layers: int, shard_bytes: int = 300 * 10**6) -> tuple[int, int, int]:
  """Writes random bf16 weights in the LLaDA-V layout; returns (bytes, tensors, shards)."""
  import ml_dtypes
  import numpy as np
  from safetensors.numpy import save_file

  from lladav_jax.convert import key_map
  from lladav_jax.convert.conversion_plan import model_shapes
  config = synthetic_config(text_layers)
  shapes = model_shapes(config, scan=False)
  rng = np.random.default_rng(0)
  directory.mkdir(parents=True)
  pending, weight_map, total, count, names = {}, {}, 0, 0, []

  def flush():
    name = f"model-{len(names) + 1:05d}.safetensors"
    save_file(pending, str(directory / name), metadata={"format": "pt"})
    weight_map.update({k: name for k in pending})
    names.append(name)
    pending.clear()

  for entry in key_map.lladav_entries(config, scan=False):
    shape = key_map.hf_shape(entry.transform, shapes[entry.path])
    value = (0.02 * rng.standard_normal(shape, np.float32)).astype(ml_dtypes.bfloat16)
    pending[entry.hf_keys[0]] = value
    total, count = total + value.nbytes, count + 1
    if sum(v.nbytes for v in pending.values()) >= shard_bytes:
      flush()
  if pending:
    flush()
  index = {"metadata": {"total_size": total}, "weight_map": weight_map}
  (directory / "model.safetensors.index.json").write_text(json.dumps(index))
  (directory / "config.json").write_text(json.dumps(config.to_hf_config()))
  return total, count, len(names)


def write_bin_copy(src: pathlib.Path, directory: pathlib.Path) -> None:
  """The safetensors shards of `src` as pytorch_model-0000i-of-0000N.bin + pytorch_model.bin.index.json."""
  import numpy as np
  import torch
  from safetensors.numpy import load_file

  directory.mkdir(parents=True)
  files = sorted(src.glob("*.safetensors"))
  weight_map = {}
  for i, file in enumerate(files):
    name = f"pytorch_model-{i + 1:05d}-of-{len(files):05d}.bin"
    shard = {k: torch.from_numpy(v.view(np.int16)).view(torch.bfloat16) for k, v in load_file(str(file)).items()}
    torch.save(shard, directory / name)
    weight_map.update({k: name for k in shard})
    del shard
  total = json.loads((src / "model.safetensors.index.json").read_text())["metadata"]["total_size"]
  (directory / "pytorch_model.bin.index.json").write_text(
      json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
  shutil.copy(src / "config.json", directory / "config.json")


def naive(src: pathlib.Path, out: pathlib.Path) -> None:
  """What a converter without streaming does: everything in memory at once."""
  import orbax.checkpoint as ocp
  from safetensors.numpy import load_file

  from lladav_jax.model_config import LLaDAVConfig
  from lladav_jax.convert import key_map
  state = {}
  for file in sorted(src.glob("*.safetensors")):
    state.update(load_file(str(file)))
  config = LLaDAVConfig.from_hf_config(json.loads((src / "config.json").read_text()))
  params = key_map.params_from_hf(state.__getitem__, key_map.lladav_entries(config, scan=True))
  ocp.StandardCheckpointer().save(out, params)


def child(step: str, src: str, out: str) -> None:
  """Runs one step and prints {"baseline_kb", "peak_kb", "seconds", "reset"} as JSON."""
  import jax

  from lladav_jax.convert import operations as convert
  jax.devices()  # the backend is part of the interpreter's baseline
  baseline = _status_kb("VmRSS")
  try:  # "5" resets the peak resident set size to the current one (Linux >= 4.0)
    pathlib.Path("/proc/self/clear_refs").write_text("5")
    reset = True
  except OSError:
    reset = False
  start = time.perf_counter()
  if step in ("import", "import-bin"):
    convert.import_lladav(src, out, progress=False)
  elif step == "export":
    convert.export(src, out, progress=False)
  else:
    naive(pathlib.Path(src), pathlib.Path(out))
  seconds = time.perf_counter() - start
  print(json.dumps({"baseline_kb": baseline, "peak_kb": _status_kb("VmHWM"), "seconds": seconds, "reset": reset}))


def run_step(step: str, src: pathlib.Path, out: pathlib.Path) -> dict:
  result = subprocess.run([sys.executable, __file__, "--child", step, str(src), str(out)], capture_output=True,
                          text=True, check=False)
  if result.returncode != 0:
    raise RuntimeError(f"{step} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")
  return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--text-layers", type=int, default=16, help="16 gives a 1.2 GB checkpoint")
  parser.add_argument("--child", nargs=3, metavar=("STEP", "SRC", "OUT"), help=argparse.SUPPRESS)
  args = parser.parse_args()
  if args.child:
    child(*args.child)
    return

  root = pathlib.Path(tempfile.mkdtemp(prefix="lladav_convert_bench_"))
  try:
    size, tensors, shards = generate(root / "hf", args.text_layers)
    print(f"synthetic LLaDA-V checkpoint: {size / 1e9:.2f} GB bf16, {tensors} tensors in {shards} shards "
          f"(text {args.text_layers} layers x 1536, vision 6 of 7 layers x 384)")
    if size < 10**9:
      print("warning: below 1 GB; raise --text-layers")
    write_bin_copy(root / "hf", root / "hf_bin")
    bin_size = sum(f.stat().st_size for f in (root / "hf_bin").glob("*.bin"))
    print(f"the same weights as PyTorch .bin shards: {bin_size / 1e9:.2f} GB")
    steps = [("naive", root / "hf", root / "naive"), ("import", root / "hf", root / "ckpt"),
             ("import-bin", root / "hf_bin", root / "ckpt_bin"), ("export", root / "ckpt", root / "exported")]
    print(f"{'step':<12}{'peak RSS above baseline':>26}{'/ checkpoint':>14}{'throughput':>14}")
    ratios = {}
    for step, src, out in steps:
      r = run_step(step, src, out)
      above = (r["peak_kb"] - r["baseline_kb"]) * 1024
      ratios[step] = above / size
      note = "" if r["reset"] else "  (peak not resettable: includes imports)"
      print(f"{step:<12}{above / 1e9:>23.2f} GB{ratios[step]:>13.2f}x{size / 1e6 / r['seconds']:>9.0f} MB/s{note}")
      if step in ("naive", "import-bin"):  # not needed by a later step: free the disk
        shutil.rmtree(out, ignore_errors=True)
    for step in ("import", "import-bin", "export"):
      verdict = "ok" if ratios[step] <= TARGET else "OVER TARGET"
      print(f"{step}: peak / checkpoint = {ratios[step]:.2f} (target <= {TARGET}): {verdict}; "
            f"{ratios['naive'] / max(ratios[step], 1e-9):.1f}x less than naive")
  finally:
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
  main()

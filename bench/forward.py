"""Forward throughput of the LLaDA tower vs transformers' torch Llama (full mask), same weights, and of
each attention implementation (compute.attention_impl) that runs on this backend vs the plain "xla" one.

All run on this machine's CPU in one process, alternately, after a warm-up; the printed ratios are
ours / torch and implementation / plain, in tokens per second. "splash" (TPU) and "cudnn" (GPU) do not
run on CPU and are listed as such. Usage: python bench/forward.py [--hidden 512 --layers 8 --seq 4096 ...]
"""

import argparse
import os
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from lladav_jax.convert import key_map  # noqa: E402
from lladav_jax.models import ComputeConfig, LLaDAConfig  # noqa: E402
from lladav_jax.models.compute import ATTENTION_IMPLS  # noqa: E402
from lladav_jax.models.llada import LLaDAModel, default_positions  # noqa: E402


KERNEL_BACKENDS = {"splash": "tpu", "cudnn": "gpu"}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--intermediate", type=int, default=1536)
  parser.add_argument("--vocab", type=int, default=32768)
  parser.add_argument("--seq", type=int, default=1024)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  config = LLaDAConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       num_key_value_heads=args.heads)
  torch.manual_seed(0)
  hf = LlamaForCausalLM(LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
      num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
      num_key_value_heads=config.num_key_value_heads, rope_theta=config.rope_theta,
      rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=False)).eval()
  state = {k: v.numpy() for k, v in hf.state_dict().items()}
  params = {"params": key_map.params_from_hf(state.__getitem__, key_map.llada_entries(config, scan=True))}
  params = jax.device_put(params)
  ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(args.batch, args.seq))
  positions = default_positions(args.batch, args.seq)
  # The kernels time only on their own hardware (splash's CPU interpret mode is for tests).
  backend = jax.default_backend()
  runnable = [impl for impl in ATTENTION_IMPLS if KERNEL_BACKENDS.get(impl, backend) == backend]

  def forward_for(impl):
    model = LLaDAModel(config, ComputeConfig(dtype="float32", param_dtype="float32", scan_layers=True,
                                             attention_impl=impl))

    @jax.jit
    def forward(params, ids):
      embeds = model.apply(params, ids, method=LLaDAModel.embed)
      return model.apply(params, embeds, positions, None)  # no mask: every token sees every token
    return forward

  forwards = {impl: forward_for(impl) for impl in runnable}
  full_mask = torch.ones(args.batch, 1, args.seq, args.seq, dtype=torch.bool)
  torch_ids = torch.from_numpy(ids)

  def theirs():
    with torch.no_grad():
      return hf(input_ids=torch_ids, attention_mask=full_mask).logits

  jax_ids = jnp.asarray(ids)
  outputs = {impl: np.asarray(forward(params, jax_ids)) for impl, forward in forwards.items()}  # compiles
  theirs_out = theirs().numpy()

  times = {name: [] for name in list(forwards) + ["torch"]}
  for _ in range(args.repeats):  # alternate so that all see the same machine state
    for impl, forward in forwards.items():
      start = time.perf_counter()
      forward(params, jax_ids).block_until_ready()
      times[impl].append(time.perf_counter() - start)
    start = time.perf_counter()
    theirs()
    times["torch"].append(time.perf_counter() - start)

  tokens = args.batch * args.seq
  tps = {name: tokens / statistics.median(t) for name, t in times.items()}
  print(f"config: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, intermediate "
        f"{args.intermediate}, vocab {args.vocab}, batch {args.batch} x {args.seq} tokens, float32, "
        f"{jax.devices()[0].platform} ({os.cpu_count()} cores), torch threads {torch.get_num_threads()}")
  print(f"max |logit difference| xla vs torch: {float(np.abs(outputs['xla'] - theirs_out).max()):.2e}")
  for impl in forwards:
    print(f"lladav_jax {impl:10s} (jit): {tps[impl]:10.0f} tokens/s  (median of {args.repeats}), "
          f"{tps[impl] / tps['xla']:.2f}x the plain path, max |logit difference| "
          f"{float(np.abs(outputs[impl] - outputs['xla']).max()):.2e}")
  print(f"transformers (torch):       {tps['torch']:10.0f} tokens/s  (median of {args.repeats})")
  print(f"ratio lladav_jax xla / torch: {tps['xla'] / tps['torch']:.2f}x")
  not_run = [impl for impl in ATTENTION_IMPLS if impl not in forwards]
  if not_run:
    print(f"not run on {backend}: {', '.join(not_run)}")


if __name__ == "__main__":
  main()

"""Forward throughput of the LLaDA tower vs transformers' torch Llama (full mask), same weights.

Both run on this machine's CPU in one process, alternately, after a warm-up; the printed ratio is
ours / torch in tokens per second. Usage: python bench/forward.py [--hidden 512 --layers 8 ...]
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
from lladav_jax.models.llada import LLaDAModel, default_positions  # noqa: E402


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
  compute = ComputeConfig(dtype="float32", param_dtype="float32", scan_layers=True)
  model = LLaDAModel(config, compute)
  params = {"params": key_map.params_from_hf(state.__getitem__, key_map.llada_entries(config, scan=True))}
  params = jax.device_put(params)

  ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(args.batch, args.seq))
  positions = default_positions(args.batch, args.seq)

  @jax.jit
  def ours(params, ids):
    embeds = model.apply(params, ids, method=LLaDAModel.embed)
    return model.apply(params, embeds, positions, None)  # no mask: every token sees every token

  full_mask = torch.ones(args.batch, 1, args.seq, args.seq, dtype=torch.bool)
  torch_ids = torch.from_numpy(ids)

  def theirs():
    with torch.no_grad():
      return hf(input_ids=torch_ids, attention_mask=full_mask).logits

  jax_ids = jnp.asarray(ids)
  ours_out = np.asarray(ours(params, jax_ids))  # compiles
  theirs_out = theirs().numpy()
  max_diff = float(np.abs(ours_out - theirs_out).max())

  ours_times, theirs_times = [], []
  for _ in range(args.repeats):  # alternate so both see the same machine state
    start = time.perf_counter()
    ours(params, jax_ids).block_until_ready()
    ours_times.append(time.perf_counter() - start)
    start = time.perf_counter()
    theirs()
    theirs_times.append(time.perf_counter() - start)

  tokens = args.batch * args.seq
  ours_tps = tokens / statistics.median(ours_times)
  theirs_tps = tokens / statistics.median(theirs_times)
  print(f"config: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, intermediate "
        f"{args.intermediate}, vocab {args.vocab}, batch {args.batch} x {args.seq} tokens, float32, "
        f"{jax.devices()[0].platform} ({os.cpu_count()} cores), torch threads {torch.get_num_threads()}")
  print(f"max |logit difference|: {max_diff:.2e}")
  print(f"lladav_jax (jit):      {ours_tps:10.0f} tokens/s  (median of {args.repeats})")
  print(f"transformers (torch):  {theirs_tps:10.0f} tokens/s  (median of {args.repeats})")
  print(f"ratio lladav_jax / torch: {ours_tps / theirs_tps:.2f}x")


if __name__ == "__main__":
  main()

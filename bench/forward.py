"""One decoding step's forward: the LLaDA tower over the whole canvas and the LM head over the last
`--head` positions (as the sampler runs it), against transformers' torch Llama with a full mask and
`logits_to_keep` (the same work in torch), same float32 weights; for each attention implementation
(compute.attention_impl) that runs on this backend.

Everything runs on this machine's CPU in one process, alternately (A B A B ...), after a warm-up; the
printed ratios are tokens/s of ours over torch's and of each implementation over the plain "xla" one,
medians over the repeats. "splash" (TPU) and "cudnn" (GPU) do not run on CPU and are listed as such.
Usage: python bench/forward.py [--hidden 512 --layers 8 --vocab 126464 --seqs 1551,4096 --head 32 ...]
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
from lladav_jax.models.compute import ATTENTION_IMPLS, inference_compute  # noqa: E402
from lladav_jax.models.llada import LLaDAModel, default_positions  # noqa: E402


KERNEL_BACKENDS = {"splash": "tpu", "cudnn": "gpu"}


def torch_llama(config: LLaDAConfig) -> LlamaForCausalLM:
  """transformers' Llama with `config`'s dimensions and random weights."""
  torch.manual_seed(0)
  return LlamaForCausalLM(LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
      num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
      num_key_value_heads=config.num_key_value_heads, rope_theta=config.rope_theta,
      rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=False)).eval()


def jax_params(hf: LlamaForCausalLM, config: LLaDAConfig) -> dict:
  """The torch model's weights as the LLaDA tower's (scanned) params."""
  state = {k: v.numpy() for k, v in hf.state_dict().items()}
  return jax.device_put({"params": key_map.params_from_hf(state.__getitem__, key_map.llada_entries(config, scan=True))})


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--layers", type=int, default=8)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--intermediate", type=int, default=1536)
  parser.add_argument("--vocab", type=int, default=126464)
  parser.add_argument("--seqs", default="1551,4096", help="canvas lengths (1551: one 384x384 image's prompt + 32)")
  parser.add_argument("--head", type=int, default=32, help="positions the LM head sees (the generated region)")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  config = LLaDAConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                       num_hidden_layers=args.layers, num_attention_heads=args.heads,
                       num_key_value_heads=args.heads)
  hf = torch_llama(config)
  params = jax_params(hf, config)
  # The kernels time only on their own hardware (splash's CPU interpret mode is for tests).
  backend = jax.default_backend()
  runnable = [impl for impl in ATTENTION_IMPLS if KERNEL_BACKENDS.get(impl, backend) == backend]
  decoding_impl = inference_compute("float32").attention_impl

  def forward_for(impl, length):
    model = LLaDAModel(config, ComputeConfig(dtype="float32", param_dtype="float32", scan_layers=True,
                                             attention_impl=impl))

    @jax.jit
    def forward(params, ids):
      embeds = model.apply(params, ids, method=LLaDAModel.embed)
      hidden, _ = model.apply(params, embeds, default_positions(args.batch, length), None,
                              method=LLaDAModel.hidden_states)  # no mask: every token sees every token
      return model.apply(params, hidden[:, -args.head:], method=LLaDAModel.logits)
    return forward

  print(f"config: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, intermediate "
        f"{args.intermediate}, vocab {args.vocab}, batch {args.batch}, LM head on the last {args.head} positions, "
        f"float32, {jax.devices()[0].platform} ({os.cpu_count()} cores), torch threads {torch.get_num_threads()}; "
        f"decoding uses {decoding_impl!r} on {backend}")
  for length in (int(s) for s in args.seqs.split(",")):
    ids = np.random.default_rng(0).integers(0, config.vocab_size, size=(args.batch, length))
    forwards = {impl: forward_for(impl, length) for impl in runnable}
    full_mask = torch.ones(args.batch, 1, length, length, dtype=torch.bool)
    torch_ids = torch.from_numpy(ids)

    def theirs():
      with torch.no_grad():
        return hf(input_ids=torch_ids, attention_mask=full_mask, logits_to_keep=args.head).logits

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

    seconds = {name: statistics.median(t) for name, t in times.items()}
    print(f"\n{length} tokens: transformers (torch) {seconds['torch']:.3f} s per forward  1.00x")
    for impl in forwards:
      print(f"  lladav_jax {impl:10s} (jit) {seconds[impl]:.3f} s   {seconds['torch'] / seconds[impl]:5.2f}x torch, "
            f"{seconds['xla'] / seconds[impl]:5.2f}x xla   max |logit difference| vs torch "
            f"{float(np.abs(outputs[impl] - theirs_out).max()):.1e}{'   (decoding)' if impl == decoding_impl else ''}")
  not_run = [impl for impl in ATTENTION_IMPLS if impl not in runnable]
  if not_run:
    print(f"\nnot run on {backend}: {', '.join(not_run)}")


if __name__ == "__main__":
  main()

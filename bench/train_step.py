"""Train-step time of the jitted, sharded step vs a straightforward PyTorch step, same dims and weights,
and of each attention implementation and the chunked loss vs the plain step ("xla", full logits).

Ours: lladav_jax.train's step (corruption, forward, Eq. 1 loss, backward, clip, AdamW) on a text
batch, once per variant of compute.attention_impl / compute.loss_chunk that runs on CPU ("splash" and
"cudnn" need their TPU / GPU). Theirs: transformers' torch Llama with a full attention mask, the same
loss written out, then torch.nn.utils.clip_grad_norm_ and torch.optim.AdamW. All train the language
model from the same weights on the same masks (drawn by our step's RNG) and run alternately on this
machine's CPU after a warm-up; the first losses are printed side by side as a check. The printed
ratios are theirs / ours and plain / variant in seconds per step (above 1: the second is faster).
Usage: python bench/train_step.py [--hidden 512 --seq 4096 --batch 1 ...]
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
import numpy as np  # noqa: E402
import torch  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

from configs import tiny  # noqa: E402
from lladav_jax import run_config  # noqa: E402
from lladav_jax.convert import key_map  # noqa: E402
from lladav_jax.diffusion import loss as diffusion_loss  # noqa: E402
from lladav_jax.train import loop  # noqa: E402
from lladav_jax.train.host_batches import ShardedBatches, SyntheticSource  # noqa: E402
from lladav_jax.train.step import step_inputs  # noqa: E402


def make_config(args, attention_impl: str, loss_chunk: int):
  config = tiny.get_config()
  config.model.text.update(dict(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.intermediate,
                                num_hidden_layers=args.layers, num_attention_heads=args.heads,
                                num_key_value_heads=args.heads))
  config.model.tokens.update(dict(bos=args.vocab - 12, eos=args.vocab - 11, start_header=args.vocab - 10,
                                  end_header=args.vocab - 9, eot=args.vocab - 8, mask=args.vocab - 1))
  config.compute.update(dict(dtype="float32", param_dtype="float32", remat_policy=args.remat,
                             attention_impl=attention_impl, loss_chunk=loss_chunk))
  config.train.update(dict(global_batch_size=args.batch, micro_batches=1, num_steps=1000))
  config.train.synthetic.update(dict(seq_len=args.seq, max_crops=0, image_fraction=0.0))
  config.optim.update(dict(trainable=("language",), lr=1e-5, warmup_ratio=0.0))
  config.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  return config


def torch_model(text, state_from_jax):
  model = LlamaForCausalLM(LlamaConfig(
      vocab_size=text.vocab_size, hidden_size=text.hidden_size, intermediate_size=text.intermediate_size,
      num_hidden_layers=text.num_hidden_layers, num_attention_heads=text.num_attention_heads,
      num_key_value_heads=text.num_key_value_heads, rope_theta=text.rope_theta, rms_norm_eps=text.rms_norm_eps,
      tie_word_embeddings=False, attention_bias=False, mlp_bias=False))
  model.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in state_from_jax.items()})
  return model.train()


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("--hidden", type=int, default=512)
  parser.add_argument("--layers", type=int, default=4)
  parser.add_argument("--heads", type=int, default=8)
  parser.add_argument("--intermediate", type=int, default=1536)
  parser.add_argument("--vocab", type=int, default=32768)
  parser.add_argument("--seq", type=int, default=512)
  parser.add_argument("--batch", type=int, default=4)
  parser.add_argument("--remat", default="none")
  parser.add_argument("--loss_chunk", type=int, default=128, help="positions per chunk of the chunked loss")
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  # (attention_impl, loss_chunk) per variant; the first is the plain step.
  variants = {"plain": ("xla", 0), "blockwise": ("blockwise", 0), "chunked loss": ("xla", args.loss_chunk),
              "blockwise + chunked loss": ("blockwise", args.loss_chunk)}
  setups = {name: loop.setup(make_config(args, *options), total_steps=1000) for name, options in variants.items()}
  setup = setups["plain"]
  model_config = run_config.model_config(setup.config)
  states = {name: s.init() for name, s in setups.items()}  # the same seed: the same weights
  source = SyntheticSource(model_config, num_examples=64, seed=0, prompt_tokens=(args.seq // 4, args.seq // 2),
                           response_tokens=(args.seq // 4, args.seq // 2))
  batches = ShardedBatches(source, global_batch=args.batch, rows=(0, args.batch), seq_len=args.seq, max_crops=0)
  hosts = [step_inputs(next(batches), dialogue_causal=False) for _ in range(args.repeats + 1)]

  # The same weights in torch, and the masks our step will draw at each step.
  text_params = jax.device_get(states["plain"].params["language_model"])
  entries = key_map.llada_entries(model_config.text, scan=True)
  hf = torch_model(model_config.text, dict(key_map.params_to_hf(text_params, entries)))
  opt = torch.optim.AdamW(hf.parameters(), lr=1e-5, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
  key = jax.random.wrap_key_data(jax.device_get(states["plain"].rng))
  mask_id = model_config.tokens.mask

  def corruption(step, host):
    noisy, c = diffusion_loss.corrupt(jax.random.fold_in(key, step), host["input_ids"], host["labels"],
                                      host["segment_ids"], mask_id=mask_id)
    return (torch.from_numpy(np.array(noisy, np.int64)), torch.from_numpy(np.array(c.masked)),
            torch.from_numpy(np.array(c.p_mask)))

  torch_inputs = [(corruption(s, h), torch.from_numpy(h["labels"].astype(np.int64)),
                   torch.from_numpy(h["segment_ids"] > 0)) for s, h in enumerate(hosts)]

  def theirs(i):
    (noisy, masked, p_mask), labels, attend = torch_inputs[i]
    b, length = labels.shape
    full_mask = (attend[:, None, None, :] & attend[:, None, :, None]) | torch.eye(length, dtype=torch.bool)
    logits = hf(input_ids=noisy, attention_mask=full_mask).logits.float()
    supervised = (labels != -100) & attend
    n_supervised = supervised.sum(-1, keepdim=True).expand(b, length)
    ce = torch.nn.functional.cross_entropy(logits[masked], labels[masked], reduction="none") / p_mask[masked]
    loss = torch.sum(ce / n_supervised[masked]) / b
    loss.backward()
    torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
    opt.step()
    opt.zero_grad(set_to_none=True)
    return float(loss.detach())

  def ours(name, i):
    states[name], metrics = setups[name].train_step(states[name], hosts[i])
    return float(metrics["loss"])  # float() waits for the step

  first = {name: ours(name, 0) for name in setups}  # compiles
  theirs_first = theirs(0)
  times = {name: [] for name in list(setups) + ["torch"]}
  for i in range(1, args.repeats + 1):  # alternate so that all see the same machine state
    for name in setups:
      start = time.perf_counter()
      ours(name, i)
      times[name].append(time.perf_counter() - start)
    start = time.perf_counter()
    theirs(i)
    times["torch"].append(time.perf_counter() - start)

  seconds = {name: statistics.median(t) for name, t in times.items()}
  print(f"config: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, intermediate "
        f"{args.intermediate}, vocab {args.vocab}, batch {args.batch} x {args.seq} tokens, float32, remat "
        f"{args.remat}, loss chunk {args.loss_chunk}, {jax.devices()[0].platform} ({os.cpu_count()} cores), "
        f"torch threads {torch.get_num_threads()}")
  print(f"first-step loss: torch {theirs_first:.5f}, " + ", ".join(f"{n} {v:.5f}" for n, v in first.items()))
  for name, (impl, chunk) in variants.items():
    print(f"lladav_jax {name:24s} (attention {impl:9s}, loss chunk {chunk:4d}): {seconds[name] * 1e3:9.1f} ms  "
          f"(median of {args.repeats}), plain / this: {seconds['plain'] / seconds[name]:.2f}x")
  print(f"torch train step (eager): {seconds['torch'] * 1e3:9.1f} ms  (median of {args.repeats})")
  print(f"ratio torch / lladav_jax plain step time: {seconds['torch'] / seconds['plain']:.2f}x")
  print("not run on cpu: splash (TPU kernel), cudnn (GPU kernel)")


if __name__ == "__main__":
  main()

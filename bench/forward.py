"""A decode's model work against torch's, same float32 weights: one step's forward (the LLaDA tower over
the whole canvas, the LM head over the last `--head` positions, as the sampler runs it) against
transformers' torch Llama with a full mask and `logits_to_keep` (the same work in torch), for each
attention implementation (compute.attention_impl) that runs on this backend; and the prompt's
encoding, which a decode runs once (the vision tower over one 384x384 image's two crops, the
projector, the image newlines and the splice into the token embeddings, bench/torch_prompt.py in
torch); then one answer's model work: the encoding plus `--head` forwards (an answer of that many
tokens, one per step) at the first canvas length, decoding's attention against torch.

Everything runs on this machine's CPU in one process, alternately (A B A B ...), after a warm-up; the
printed ratios are tokens/s of ours over torch's and of each implementation over the plain "xla" one,
medians over the repeats. "splash" (TPU) and "cudnn" (GPU) do not run on CPU and are listed as such.
The vision tower's dimensions are flags (SigLIP2 so400m is --vision-hidden 1152 --vision-layers 27
--vision-heads 16 --vision-intermediate 4304; the default is smaller, to keep the run short).
Usage: python bench/forward.py [--hidden 512 --layers 8 --vocab 126464 --seqs 1551,4096 --head 32 ...]
"""

import argparse
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from bench.sampler import add_model_flags, build_model, image_prompt, random_params  # noqa: E402
from bench.timing import alternate  # noqa: E402
from bench.torch_prompt import TorchPromptEncoder  # noqa: E402
from bench.upstream_generate import torch_language_model  # noqa: E402
from lladav_jax.images.crops import sample_visuals  # noqa: E402
from lladav_jax.models import LLaDAV, SiglipConfig  # noqa: E402
from lladav_jax.models.compute import ATTENTION_IMPLS, ComputeConfig  # noqa: E402
from lladav_jax.models.llada import LLaDAModel, default_positions  # noqa: E402
from lladav_jax.samples import build_sample, collate, model_inputs  # noqa: E402


KERNEL_BACKENDS = {"splash": "tpu", "cudnn": "gpu"}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  add_model_flags(parser, hidden=512, layers=8, vocab=126464)
  parser.add_argument("--vision-hidden", type=int, default=384)
  parser.add_argument("--vision-layers", type=int, default=6, help="the tower's depth; features from the penultimate")
  parser.add_argument("--vision-heads", type=int, default=6)
  parser.add_argument("--vision-intermediate", type=int, default=1536)
  parser.add_argument("--seqs", default="1551,4096", help="canvas lengths (1551: one 384x384 image's prompt + 32)")
  parser.add_argument("--head", type=int, default=32, help="positions the LM head sees (the generated region)")
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=5)
  args = parser.parse_args()

  vision = SiglipConfig(hidden_size=args.vision_hidden, intermediate_size=args.vision_intermediate,
                        num_hidden_layers=args.vision_layers, num_attention_heads=args.vision_heads)
  model = build_model(args, vision=vision, vision_select_layer=-2)  # the published model's feature layer
  ids, image = image_prompt(np.random.default_rng(0))
  sample = build_sample(ids, sample_visuals([image], model.config), model.config)
  params = random_params(model, sample, scales={})  # small weights: logits comparable at 1e-6
  hf = torch_language_model(model, params)
  text_params = {"params": params["params"]["language_model"]}
  config = model.config.text
  # The kernels time only on their own hardware (splash's CPU interpret mode is for tests).
  backend = jax.default_backend()
  runnable = [impl for impl in ATTENTION_IMPLS if KERNEL_BACKENDS.get(impl, backend) == backend]
  decoding_impl = model.compute.attention_impl

  def forward_for(impl, length):
    tower = LLaDAModel(config, ComputeConfig(dtype="float32", param_dtype="float32", scan_layers=True,
                                             attention_impl=impl))

    @jax.jit
    def forward(params, ids):
      embeds = tower.apply(params, ids, method=LLaDAModel.embed)
      hidden, _ = tower.apply(params, embeds, default_positions(args.batch, length), None,
                              method=LLaDAModel.hidden_states)  # no mask: every token sees every token
      return tower.apply(params, hidden[:, -args.head:], method=LLaDAModel.logits)
    return forward

  print(f"config: hidden {args.hidden}, layers {args.layers}, heads {args.heads}, intermediate "
        f"{args.intermediate}, vocab {args.vocab}, batch {args.batch}, LM head on the last {args.head} positions; "
        f"vision tower hidden {args.vision_hidden}, {model.config.vision_feature_depth} of {args.vision_layers} "
        f"layers; float32, {jax.devices()[0].platform} ({os.cpu_count()} cores), torch threads "
        f"{torch.get_num_threads()}; decoding uses {decoding_impl!r} on {backend}")
  lengths = [int(s) for s in args.seqs.split(",")]
  first_forward = {}  # seconds per forward at the first length, decoding's attention and torch
  for length in lengths:
    ids_batch = np.random.default_rng(0).integers(0, config.vocab_size, size=(args.batch, length))
    forwards = {impl: forward_for(impl, length) for impl in runnable}
    full_mask = torch.ones(args.batch, 1, length, length, dtype=torch.bool)
    torch_ids, jax_ids = torch.from_numpy(ids_batch), jnp.asarray(ids_batch)

    def theirs():
      with torch.no_grad():
        return hf(input_ids=torch_ids, attention_mask=full_mask, logits_to_keep=args.head).logits

    outputs = {impl: np.asarray(forward(text_params, jax_ids)) for impl, forward in forwards.items()}  # compiles
    theirs_out = theirs().numpy()
    runs = {impl: (lambda f=forward: f(text_params, jax_ids).block_until_ready()) for impl, forward in forwards.items()}
    seconds, _ = alternate({**runs, "torch": theirs}, args.repeats)
    if not first_forward:
      first_forward = {"ours": seconds[decoding_impl], "torch": seconds["torch"]}
    print(f"\n{length} tokens: transformers (torch) {seconds['torch']:.3f} s per forward  1.00x")
    for impl in forwards:
      print(f"  lladav_jax {impl:10s} (jit) {seconds[impl]:.3f} s   {seconds['torch'] / seconds[impl]:5.2f}x torch, "
            f"{seconds['xla'] / seconds[impl]:5.2f}x xla   max |logit difference| vs torch "
            f"{float(np.abs(outputs[impl] - theirs_out).max()):.1e}{'   (decoding)' if impl == decoding_impl else ''}")

  # The prompt's encoding, once per answer.
  inputs = model_inputs(collate([[sample]], sample.length, sample.num_crops, model.config))
  image_inputs = [inputs[k] for k in ("input_ids", "image_mask", "image_index", "image_weight", "pixel_values")]
  encode = jax.jit(lambda params, *x: model.apply(params, *x, method=LLaDAV.embed_inputs))
  torch_encoder, embed = TorchPromptEncoder(model, params), hf.get_input_embeddings()
  crops = np.asarray(inputs["pixel_values"][0])
  ours_embeds = np.asarray(encode(params, *image_inputs))[0]
  theirs_embeds = torch_encoder(embed, ids, crops)[0].numpy()
  seconds, _ = alternate({"ours": lambda: jax.block_until_ready(encode(params, *image_inputs)),
                          "torch": lambda: torch_encoder(embed, ids, crops)}, args.repeats)
  print(f"\nprompt encoding ({sample.length} tokens: one 384x384 image, {sample.num_crops} crops): torch "
        f"{seconds['torch']:.3f} s, lladav_jax (jit) {seconds['ours']:.3f} s   {seconds['torch'] / seconds['ours']:5.2f}x "
        f"torch   max |embedding difference| {float(np.abs(ours_embeds - theirs_embeds).max()):.1e}")
  steps = args.head
  answer = {who: seconds[who] + steps * first_forward[who] for who in ("ours", "torch")}
  print(f"one answer's model work (the encoding + {steps} forwards of {lengths[0]} tokens): torch {answer['torch']:.2f} s, "
        f"lladav_jax {answer['ours']:.2f} s   {answer['torch'] / answer['ours']:5.2f}x torch")
  not_run = [impl for impl in ATTENTION_IMPLS if impl not in runnable]
  if not_run:
    print(f"\nnot run on {backend}: {', '.join(not_run)}")


if __name__ == "__main__":
  main()

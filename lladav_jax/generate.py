"""Ask LLaDA-V about images: `python -m lladav_jax.generate --checkpoint DIR --image a.jpg --prompt "..."`.

Loads a converted checkpoint or a LLaDA-V Hugging Face directory, builds the prompt exactly as
upstream's inference path does (llava_llada chat template), decodes with the jitted sampler and
prints the answer. `--chat` keeps a multi-turn conversation going on stdin; `--trace` shows the
order in which the answer was unmasked (coloured terminal text; `--trace-file x.html|x.png` too).
"""

import argparse
import os
import pathlib
import sys
from typing import Sequence

import jax

from lladav_jax.data.prompts import THINK_TAGS, build_chat_prompt
from lladav_jax.data.records import ASSISTANT, USER, Message
from lladav_jax.data.tokenizer import IMAGE_TEXT, Tokenizer
from lladav_jax.diffusion import trace_render
from lladav_jax.diffusion.cli_flags import add_decoding_flags
from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.images import load_image
from lladav_jax.images.crops import sample_visuals
from lladav_jax.model_config import ComputeConfig
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.models.multimodal_inputs import build_sample


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = argparse.ArgumentParser(prog="python -m lladav_jax.generate", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True, help="converted checkpoint or LLaDA-V Hugging Face directory")
  p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint's tokenizer/ or the "
                 "checkpoint directory itself)")
  p.add_argument("--image", action="append", default=[], help="image file (repeatable)")
  p.add_argument("--prompt", help="the question (without --chat: required)")
  p.add_argument("--system-prompt", help="replace upstream's default system prompt")
  p.add_argument("--think", choices=["think", "no_think"], help="append the stage-3 /think or /no_think tag")
  p.add_argument("--keep-image-newline", action="store_true",
                 help="keep the \"\\n\" after <image> as training does (upstream's inference drops it)")
  p.add_argument("--gen-length", type=int, default=128)
  p.add_argument("--steps", type=int, default=128)
  p.add_argument("--block-length", type=int, default=128)
  add_decoding_flags(p)
  p.add_argument("--stop", action="append", default=[], help="extra stop string (<|eot_id|> always stops)")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--dtype", choices=["float32", "bfloat16"],
                 help="compute dtype (default: float32 on CPU, bfloat16 elsewhere)")
  p.add_argument("--chat", action="store_true", help="interactive multi-turn chat on stdin")
  p.add_argument("--trace", action="store_true", help="print the unmasking order step by step")
  p.add_argument("--trace-file", help="also write the trace picture to this .html or .png file")
  args = p.parse_args(argv)
  if not args.chat and not args.prompt:
    p.error("--prompt is required unless --chat is given")
  return args


def find_tokenizer(checkpoint: str, explicit: str | None) -> Tokenizer:
  candidates = [explicit] if explicit else [os.path.join(checkpoint, "tokenizer"), checkpoint]
  for path in candidates:
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
      return Tokenizer.from_dir(path)
  raise SystemExit(f"no tokenizer.json in {' or '.join(candidates)}; pass --tokenizer DIR")


def sampler_settings(args: argparse.Namespace, tokenizer: Tokenizer, eot_id: int) -> SamplerSettings:
  stops = [(eot_id,)] + [tuple(tokenizer.encode(s, add_special_tokens=False)) for s in args.stop]
  return SamplerSettings(
      gen_length=args.gen_length, steps=args.steps, block_length=args.block_length,
      temperature=args.temperature, cfg_scale=args.cfg, remasking=args.remasking, cache=args.cache,
      refresh=args.refresh, threshold=args.threshold, factor=args.factor,
      stop_sequences=tuple(stops), vocab_limit=len(tokenizer))


class Session:
  """A loaded model, tokenizer and images; answers one conversation turn at a time."""

  def __init__(self, args: argparse.Namespace):
    from lladav_jax import load_pretrained  # orbax and safetensors load only here
    self.args = args
    dtype = args.dtype or ("float32" if jax.default_backend() == "cpu" else "bfloat16")
    self.config, params = load_pretrained(args.checkpoint)
    self.params = {"params": params}
    self.model = LLaDAV(self.config, ComputeConfig(dtype=dtype, param_dtype=dtype, scan_layers=True))
    self.tokenizer = find_tokenizer(args.checkpoint, args.tokenizer)
    self.tokenizer.check_token_ids(self.config.tokens)
    if len(self.tokenizer) > self.config.text.vocab_size:
      raise SystemExit(f"the tokenizer has {len(self.tokenizer)} entries, the model only "
                       f"{self.config.text.vocab_size} rows: wrong --tokenizer?")
    self.settings = sampler_settings(args, self.tokenizer, self.config.tokens.eot)
    self.visuals = sample_visuals([load_image(path) for path in args.image], self.config)
    self.messages: list[Message] = []

  def ask(self, question: str) -> str:
    if not self.messages and self.visuals and IMAGE_TEXT not in question:
      # upstream puts the images at the start of the first user turn, one placeholder each
      question = " ".join([IMAGE_TEXT] * len(self.visuals)) + "\n" + question
    if self.args.think:
      question += THINK_TAGS[self.args.think]
    messages = self.messages + [Message(USER, question)]
    ids = build_chat_prompt(self.tokenizer, messages, system_prompt=self.args.system_prompt,
                            keep_image_newline=self.args.keep_image_newline)
    sample = build_sample(ids, self.visuals, self.config, sample_id="prompt")
    answers, trace = generate(self.model, self.params, [sample], self.settings, seed=self.args.seed)
    tokens = [int(t) for t in answers[0]]
    text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
    self.messages = messages + [Message(ASSISTANT, text)]
    if self.args.trace or self.args.trace_file:
      self.show_trace(tokens, trace.commit_steps[0])
    return text

  def show_trace(self, tokens: list[int], commit_steps) -> None:
    pieces = [self.tokenizer.decode([t]) for t in tokens]
    color = sys.stdout.isatty() or bool(os.environ.get("FORCE_COLOR"))
    if self.args.trace:
      print("unmasking order (one line per step; blue = first, red = last):")
      for line in trace_render.terminal_frames(pieces, commit_steps, color=color):
        print("  " + line)
    if self.args.trace_file:
      trace_render.write_trace(self.args.trace_file, pieces, commit_steps, title=self.messages[-2].content)
      print(f"trace picture written to {self.args.trace_file}")


def main(argv: Sequence[str] | None = None) -> None:
  args = parse_args(argv)
  for path in args.image:
    if not pathlib.Path(path).is_file():
      raise SystemExit(f"image not found: {path}")
  session = Session(args)
  if not args.chat:
    print(session.ask(args.prompt))
    return
  print("Chat with LLaDA-V (empty line or Ctrl-D to quit).")
  question = args.prompt
  while True:
    if question is None:
      try:
        question = input("you> ").strip()
      except EOFError:
        break
    if not question:
      break
    print("lladav>", session.ask(question))
    question = None


if __name__ == "__main__":
  main()

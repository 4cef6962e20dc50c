"""Ask LLaDA-V about images or a video: `python -m lladav_jax.generate --checkpoint DIR --image a.jpg --prompt ..`.

Loads a converted checkpoint, a LLaDA-V Hugging Face directory or a training workdir, builds the
prompt exactly as upstream's inference path does (llava_llada chat template; images and videos, with
`--video clip.mp4`, as its evaluation wrapper lays them out), decodes with the jitted sampler and
prints the answer. `--chat` keeps a multi-turn conversation going on stdin; `--trace` shows the order
in which the answer was unmasked (coloured terminal text; `--trace-file x.html|x.png` too, one file per
turn in a chat: x-1.html, x-2.html, ...).

Everything the flags name is checked before the weights are read: the images or the video, the trace
file's kind, the tokenizer against the checkpoint's config, the decoding settings.
"""

import argparse
import os
import sys
from typing import Sequence

from lladav_jax import cli, trace_render
from lladav_jax.checkpoints.adapters import check_adapters, load_adapters
from lladav_jax.checkpoints.pretrained import CheckpointError, load_config, load_pretrained
from lladav_jax.convert.problems import ConversionError
from lladav_jax.data.prompts import THINK_TAGS, build_chat_prompt
from lladav_jax.data.records import ASSISTANT, USER, Message
from lladav_jax.data.tokenizer import IMAGE_TEXT, TokenizerError
from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SettingsError
from lladav_jax.images import ImageDecodeError, load_image
from lladav_jax.images.crops import inference_visuals, video_placeholder_visuals, video_visual
from lladav_jax.images.video import VideoError, decode_frames, frame_count, sample_frames
from lladav_jax.models import LLaDAV
from lladav_jax.models.compute import inference_compute
from lladav_jax.samples import SampleError, build_sample

# Without --gen-length / --steps / --block-length: upstream's generate_demo.py settings.
DEFAULT_LENGTH = 128


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
  p = cli.ArgumentParser(prog="python -m lladav_jax.generate", description=__doc__.split("\n")[0])
  p.add_argument("--checkpoint", required=True,
                 help="converted checkpoint, LLaDA-V Hugging Face directory or training workdir")
  p.add_argument("--tokenizer", help="tokenizer directory (default: the checkpoint's tokenizer/ or the "
                 "checkpoint directory itself)")
  p.add_argument("--adapter", help="a LoRA run's adapters directory (WORKDIR/adapters), applied over the checkpoint")
  p.add_argument("--image", action="append", default=[], help="image file (repeatable)")
  p.add_argument("--video", help="video file (instead of images); frames read as upstream's evaluation reads them")
  p.add_argument("--prompt", help="the question (without --chat: required)")
  p.add_argument("--keep-image-newline", action="store_true",
                 help="keep the \"\\n\" after <image> as training does (upstream's inference drops it)")
  cli.add_decoding_flags(p, defaults=f"{DEFAULT_LENGTH}, no stop string, no think tag")
  cli.add_video_flags(p.add_argument_group("video"))
  p.add_argument("--chat", action="store_true", help="interactive multi-turn chat on stdin")
  p.add_argument("--trace", action="store_true", help="print the unmasking order step by step")
  p.add_argument("--trace-file", help="also write the trace picture to this .html or .png file "
                 "(in a chat, one file per turn: NAME-1.html, NAME-2.html, ...)")
  args = p.parse_args(argv)
  if not args.chat and not args.prompt:
    p.error("--prompt is required unless --chat is given")
  if args.video and args.image:
    p.error("--video and --image cannot be combined: a question has images or one video")
  if args.max_frames < 1:
    p.error(f"--max-frames must be at least 1, got {args.max_frames}")
  if args.trace_file:
    try:
      trace_render.check_trace_path(args.trace_file)
    except ValueError as e:
      p.error(f"--trace-file {e}")
  return args


class Session:
  """A loaded model, tokenizer and images; answers one conversation turn at a time.

  Raises CheckpointError, ConversionError, TokenizerError, SettingsError or ImageDecodeError for
  inputs that cannot work, before the weights are read.
  """

  def __init__(self, args: argparse.Namespace):
    self.args = args
    self.config = load_config(args.checkpoint)
    self.tokenizer = cli.find_tokenizer(args.checkpoint, args.tokenizer)
    self.tokenizer.check_token_ids(self.config.tokens)
    if len(self.tokenizer) > self.config.text.vocab_size:
      raise TokenizerError(f"the tokenizer has {len(self.tokenizer)} entries, the model only "
                           f"{self.config.text.vocab_size} rows: wrong --tokenizer?")
    self.settings = cli.sampler_settings(args, self.tokenizer, self.config.tokens.eot, gen_length=DEFAULT_LENGTH,
                                         steps=DEFAULT_LENGTH, block_length=DEFAULT_LENGTH).resolve(self.config)
    self.think = cli.think_mode(args, None)
    if args.video:
      video = cli.video_settings(args)
      frames = decode_frames(args.video, sample_frames(frame_count(args.video), video))
      self.visuals = video_placeholder_visuals(video_visual(frames, self.config, pool_mode=video.pool_mode),
                                               video.token_strategy)
    else:
      self.visuals = inference_visuals([load_image(path) for path in args.image], self.config)
    self.messages: list[Message] = []
    self.turns = 0
    dtype = cli.default_dtype(args.dtype)
    compute = inference_compute(dtype)
    lora = check_adapters(args.adapter, self.config, compute) if args.adapter else None
    params = load_pretrained(args.checkpoint).params
    if lora is not None:
      compute, params = load_adapters(args.adapter, lora, compute, params)
    self.model = LLaDAV(self.config, compute)
    self.params = {"params": params}

  def ask(self, question: str) -> str:
    if not self.messages and self.visuals and IMAGE_TEXT not in question:
      # upstream puts the images at the start of the first user turn, one placeholder each
      question = " ".join([IMAGE_TEXT] * len(self.visuals)) + "\n" + question
    if self.think:
      question += THINK_TAGS[self.think]
    messages = self.messages + [Message(USER, question)]
    ids = build_chat_prompt(self.tokenizer, messages, system_prompt=self.args.system_prompt,
                            keep_image_newline=self.args.keep_image_newline)
    sample = build_sample(ids, self.visuals, self.config, sample_id="prompt")
    answers, trace = generate(self.model, self.params, [sample], self.settings, seed=self.args.seed)
    self.turns += 1
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
      path = self.trace_path()
      trace_render.write_trace(path, pieces, commit_steps, title=self.messages[-2].content)
      print(f"trace picture written to {path}")

  def trace_path(self) -> str:
    """--trace-file, or in a chat its turn's own file (NAME-<turn>.html)."""
    if not self.args.chat:
      return self.args.trace_file
    stem, suffix = os.path.splitext(self.args.trace_file)
    return f"{stem}-{self.turns}{suffix}"


def main(argv: Sequence[str] | None = None) -> None:
  """The `lladav-generate` console script."""
  args = parse_args(argv)
  cli.set_platform_flags()
  try:
    session = Session(args)
  except (CheckpointError, ConversionError, TokenizerError, SettingsError, ImageDecodeError, VideoError) as e:
    cli.fail(e)
  try:
    run(session, args)
  except SampleError as e:  # a prompt too long for the model
    cli.fail(e)


def run(session: Session, args: argparse.Namespace) -> None:
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

"""What the entry points share: the argument parser, platform settings, distributed start-up, mesh
and dtype defaults, the tokenizer lookup, and the decoding and video flags of generate and eval (with
their one rule for stop strings).

The command lines are `python -m lladav_jax.{generate,train,eval,data,demo,convert}` (console scripts
`lladav-*`); the lmms-eval adapter uses these helpers too. Apart from `ArgumentParser.error`, nothing
here exits: helpers raise errors for the command line to report as one line (`fail`).

Flags, in every command line: words joined by dashes (`--gen-length`, `--coordinator-address`), the
same name for the same thing everywhere; train's run-config overrides spell the config's own fields
(`--config.train.micro_batches=4`).
"""

import argparse
import os
import sys
from typing import NoReturn, Sequence

from lladav_jax.data.prompts import THINK_TAGS
from lladav_jax.data.tokenizer import Tokenizer, TokenizerError
from lladav_jax.diffusion.settings import CACHE_MODES, REMASKING, STOP_ORDERS, SamplerSettings, decoding_settings
from lladav_jax.images.video import FRAME_RULES, TOKEN_STRATEGIES, VideoSettings
from lladav_jax.model_config import SPATIAL_POOL_MODES
from lladav_jax.models.compute import DTYPES

# XLA's concurrency-optimised CPU scheduler may order independent collectives differently on different
# devices, and a multi-device CPU program then deadlocks; this keeps program order (CPU-only flag).
XLA_CPU_FLAGS = "--xla_cpu_enable_concurrency_optimized_scheduler=false"

# Multi-process runs: (flag, type, default, help); eval adds them to argparse, train defines them in absl.
DISTRIBUTED_FLAGS = (
    ("coordinator-address", str, "", "host:port of process 0 (multi-process runs; or JAX_COORDINATOR_ADDRESS)"),
    ("num-processes", int, 0, "number of processes (multi-process runs; or JAX_NUM_PROCESSES)"),
    ("process-id", int, -1, "this process's index (multi-process runs; or JAX_PROCESS_ID)"),
    ("distributed", bool, False, "start jax.distributed with cluster auto-detection (Cloud TPU, SLURM, ...)"),
)
THINK_CHOICES = (*THINK_TAGS, "none")  # "none": no tag, even where the task has one


class _HelpWithDefaults(argparse.HelpFormatter):
  """Appends "(default: X)" to every option that has a default and does not state one."""

  def _get_help_string(self, action):
    text = action.help or ""
    unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
    if "default" in text or unset or action.default == [] or not action.option_strings:
      return text
    return f"{text} (default: {action.default})"


class ArgumentParser(argparse.ArgumentParser):
  """argparse with every default in --help and usage errors as one line on stderr (exit status 2)."""

  def __init__(self, *args, **kwargs):
    kwargs.setdefault("formatter_class", _HelpWithDefaults)
    super().__init__(*args, **kwargs)

  def error(self, message: str) -> NoReturn:
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def fail(error: Exception | str) -> NoReturn:
  """Ends a command line on an expected failure: one line on stderr, exit status 1, no traceback.
  An error that lists several problems (ConversionError) gives its first and their count."""
  message = error.one_line() if hasattr(error, "one_line") else str(error)
  print(f"error: {message}", file=sys.stderr)
  raise SystemExit(1)


def set_platform_flags(*, host_only: bool = False) -> None:
  """Call before the first device use: adds XLA_CPU_FLAGS unless XLA_FLAGS sets that flag already;
  `host_only` keeps JAX off the accelerators (weight conversion is host work) unless JAX_PLATFORMS
  says otherwise."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_enable_concurrency_optimized_scheduler" not in flags:
    os.environ["XLA_FLAGS"] = (flags + " " + XLA_CPU_FLAGS).strip()
  if host_only and not os.environ.get("JAX_PLATFORMS"):
    import jax
    jax.config.update("jax_platforms", "cpu")


def add_distributed_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
  for name, kind, default, help_text in DISTRIBUTED_FLAGS:
    if kind is bool:
      parser.add_argument(f"--{name}", action="store_true", help=help_text)
    else:
      parser.add_argument(f"--{name}", type=kind, default=default, help=help_text)


def start_distributed(coordinator_address: str = "", num_processes: int = 0, process_id: int = -1,
                      auto: bool = False) -> None:
  """Starts jax.distributed when asked: explicit values (flags, else the environment variables
  JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID), or `auto` to let JAX detect the
  cluster. Nothing is done for a single process. Call before anything touches the devices."""
  import jax
  coordinator_address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
  num_processes = num_processes or int(os.environ.get("JAX_NUM_PROCESSES", "0"))
  if process_id < 0:
    process_id = int(os.environ.get("JAX_PROCESS_ID", "-1"))
  if coordinator_address and num_processes > 1:
    if process_id < 0:
      raise ValueError("a multi-process run needs --process-id (or JAX_PROCESS_ID)")
    jax.distributed.initialize(coordinator_address, num_processes, process_id)
  elif auto:
    jax.distributed.initialize()


def parse_mesh(text: str) -> dict[str, int]:
  """"data=-1" or "data=2,fsdp=4" -> {axis: size}."""
  sizes = {}
  for part in text.split(","):
    name, _, size = part.partition("=")
    try:
      sizes[name.strip()] = int(size)
    except ValueError:
      raise ValueError(f"mesh {text!r}: expected axis=size pairs like data=-1 or data=2,fsdp=4") from None
  return sizes


def default_dtype(requested: str | None) -> str:
  """The compute dtype: `requested`, else float32 on CPU (bfloat16 is slow there) and bfloat16 elsewhere."""
  if requested is not None:
    return requested
  import jax
  return "float32" if jax.default_backend() == "cpu" else "bfloat16"


def find_tokenizer(checkpoint: str, explicit: str | None = None) -> Tokenizer:
  """`explicit`, else the checkpoint's tokenizer/ directory, else the checkpoint directory itself."""
  candidates = [explicit] if explicit else [os.path.join(checkpoint, "tokenizer"), checkpoint]
  for path in candidates:
    if os.path.isfile(os.path.join(path, "tokenizer.json")):
      return Tokenizer.from_dir(path)
  raise TokenizerError(f"no tokenizer.json in {' or '.join(candidates)}; pass --tokenizer DIR")


def add_decoding_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, *, defaults: str) -> None:
  """The SamplerSettings flags; `defaults` says where unset lengths and stops come from (for --help)."""
  parser.add_argument("--gen-length", type=int, help=f"answer length in tokens (default: {defaults})")
  parser.add_argument("--steps", type=int, help=f"model evaluations over the answer (default: {defaults})")
  parser.add_argument("--block-length", type=int,
                      help=f"semi-autoregressive block (default: the gen length if given, else {defaults})")
  parser.add_argument("--stop", action="append",
                      help=f"stop string, repeatable; replaces the default ones ({defaults}); <|eot_id|> always stops")
  parser.add_argument("--stop-order", choices=STOP_ORDERS, default="upstream",
                      help="upstream: LLaDA-V's list-order stop scan (parity); earliest: the first stop found")
  parser.add_argument("--temperature", type=float, default=0.0, help="0: the argmax; > 0: sampling")
  parser.add_argument("--cfg", type=float, default=0.0, help="classifier-free guidance scale")
  parser.add_argument("--remasking", choices=REMASKING, default="low_confidence",
                      help="commit the most confident predictions, or random ones")
  parser.add_argument("--cache", choices=CACHE_MODES, default="none",
                      help="KV cache: none (the exact decode), prefix (the prompt's), dual (all but the block) or "
                           "dllm (dLLM-Cache: every layer's features)")
  parser.add_argument("--refresh", type=int, help="refresh the KV cache every r steps of a block (dllm: the "
                                                  "answer's features every r model evaluations; default 7)")
  parser.add_argument("--prompt-refresh", type=int,
                      help="dllm: refresh the prompt's features every r model evaluations (default 25)")
  parser.add_argument("--transfer-ratio", type=float,
                      help="dllm: share of the answer's positions recomputed between refreshes (default 0.25)")
  parser.add_argument("--threshold", type=float, help="parallel decoding: commit every prediction with p >= this")
  parser.add_argument("--factor", type=float, help="parallel decoding by Fast-dLLM's factor rule")
  parser.add_argument("--think", choices=THINK_CHOICES, help=f"stage-3 tag after the question (default: {defaults})")
  parser.add_argument("--system-prompt", help="replace upstream's default system prompt")
  parser.add_argument("--seed", type=int, default=0, help="random seed of sampling and random remasking")
  parser.add_argument("--dtype", choices=DTYPES, help="compute dtype (default: float32 on CPU, bfloat16 elsewhere)")


def sampler_settings(args: argparse.Namespace, tokenizer: Tokenizer, eot_id: int, *, gen_length: int, steps: int,
                     block_length: int, stops: Sequence[str] = ()) -> SamplerSettings:
  """The decoding flags over the given defaults. --gen-length without --block-length decodes one
  block; --stop replaces the default stop strings; `decoding_settings` puts <|eot_id|> last."""
  gen = gen_length if args.gen_length is None else args.gen_length
  if args.block_length is not None:
    block = args.block_length
  else:
    block = block_length if args.gen_length is None else gen
  return decoding_settings(
      tokenizer, eot_id, gen_length=gen, steps=steps if args.steps is None else args.steps, block_length=block,
      stops=tuple(stops) if args.stop is None else tuple(args.stop), stop_order=args.stop_order,
      temperature=args.temperature, cfg_scale=args.cfg, remasking=args.remasking, cache=args.cache,
      refresh=args.refresh, prompt_refresh=args.prompt_refresh, transfer_ratio=args.transfer_ratio,
      threshold=args.threshold, factor=args.factor)


def think_mode(args: argparse.Namespace, default: str | None) -> str | None:
  """--think over the default ("none" turns the task's tag off)."""
  if args.think is None:
    return default
  return None if args.think == "none" else args.think


def add_video_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
  """How videos are read: upstream's evaluation wrapper's arguments, with its defaults."""
  defaults = VideoSettings()
  parser.add_argument("--max-frames", type=int, default=defaults.max_frames,
                      help="frames read from a video, spread uniformly (upstream's max_frames_num)")
  parser.add_argument("--frame-rule", choices=FRAME_RULES, default=defaults.frame_rule,
                      help="the frames of upstream's video_decode_backend: decord exactly --max-frames (repeated "
                      "in shorter videos), pyav at most that many and the last frame")
  parser.add_argument("--token-strategy", choices=TOKEN_STRATEGIES, default=defaults.token_strategy,
                      help="one <image> placeholder for the video, or one per frame (upstream's token_strategy)")
  parser.add_argument("--spatial-pool-mode", choices=SPATIAL_POOL_MODES, default=defaults.pool_mode,
                      help="2x2 pooling of video frames (upstream's wrapper sets it over the checkpoint's)")


def video_settings(args: argparse.Namespace) -> VideoSettings:
  """The video flags; raises ValueError for a bad --max-frames."""
  return VideoSettings(max_frames=args.max_frames, frame_rule=args.frame_rule, token_strategy=args.token_strategy,
                       pool_mode=args.spatial_pool_mode)

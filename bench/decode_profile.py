"""Where an exact decode's time goes, from a jax.profiler trace of the compiled program.

The bench/sampler.py model and prompt (one 384x384 image, real geometry; or its text-only prompt)
decoded exact. Every HLO operation the trace records goes to a part of the model by the source
location XLA keeps for it (its op_name; an operation without one goes where most of the located
operations inside it, else around it, go): the prompt's encoding (vision tower, projector, splice;
once per answer), the attention projections, the attention itself (scores, mask, softmax, weighted
values, RoPE), the MLP, the RMSNorms, the LM head, and the rest of a step (the answer's embedding,
confidences, top-k, stops, the loop). Loops and conditionals, whose trace events enclose their
bodies', are not counted themselves.

Also timed, alternately after a warm-up: the whole decode and one jitted forward of the same canvas
(the language tower over every position, the LM head over the answer), so that the step's cost
outside the forward shows. Percentages are of the traced operations' time; on several cores
operations overlap, so that time may exceed the wall time.
Usage: python bench/decode_profile.py [--hidden 512 --layers 8 --vocab 126464 --gen-length 32 --batch 1]
"""

import argparse
import collections
import gzip
import json
import os
import pathlib
import re
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from bench.sampler import add_model_flags, build_model, prompts, random_params  # noqa: E402
from bench.timing import alternate  # noqa: E402
from lladav_jax.diffusion.denoiser import Denoiser, build_canvas  # noqa: E402
from lladav_jax.diffusion.generation import collate_prompts, row_keys  # noqa: E402
from lladav_jax.diffusion.sampler import program  # noqa: E402
from lladav_jax.diffusion.settings import SamplerSettings  # noqa: E402

# Parts of the model, first match of the source location wins.
PARTS = (
    ("prompt encoding (once)", ("embed_inputs", "vision_tower", "mm_projector")),
    ("attention projections", ("q_proj", "k_proj", "v_proj", "o_proj")),
    ("attention (scores, softmax, values, RoPE)", ("self_attn",)),
    ("MLP", ("/mlp/",)),
    ("RMSNorm", ("layernorm", "/norm/")),
    ("LM head", ("lm_head",)),
)
REST = "rest of the step (embedding, confidences, top-k, stops, loop)"
CONTAINERS = ("while", "conditional", "call")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?\s([\w\-]+)\(")
_COMPUTATION = re.compile(r"^%?([\w.\-]+) .*\{\s*$")
_OP_NAME = re.compile(r'op_name="([^"]*)"')
_CALLS = re.compile(r"calls=%?([\w.\-]+)")


def hlo_parts(hlo_text: str) -> tuple[dict[str, str], set[str]]:
  """The compiled module's text -> ({instruction: its part of the model}, the names of loops and
  conditionals)."""
  sources, calls, containers, enclosing = {}, {}, set(), {}
  computation_sources, computation = {}, None
  for line in hlo_text.splitlines():
    header = _COMPUTATION.match(line)
    if header:
      computation = header.group(1)
      continue
    instruction = _INSTRUCTION.match(line)
    if not instruction:
      continue
    name, opcode = instruction.groups()
    enclosing[name] = computation
    if opcode in CONTAINERS:
      containers.add(name)
    op_name = _OP_NAME.search(line)
    if op_name:
      sources[name] = op_name.group(1)
      computation_sources.setdefault(computation, collections.Counter())[op_name.group(1)] += 1
    called = _CALLS.search(line)
    if called:
      calls[name] = called.group(1)
  # An operation without its own location takes the most frequent part among the located operations
  # of the computation it calls (a fusion's body), else of the computation around it (a loop body's).
  common = {}
  for computation, counts in computation_sources.items():
    parts = collections.Counter()
    for source, count in counts.items():
      if part_of(source) != REST:
        parts[part_of(source)] += count
    common[computation] = parts.most_common(1)[0][0] if parts else REST
  parts = {name: part_of(source) for name, source in sources.items()}
  for name, called in calls.items():
    if name not in parts and called in common:
      parts[name] = common[called]
  for name, computation in enclosing.items():
    parts.setdefault(name, common.get(computation, REST))
  return parts, containers


def part_of(source: str) -> str:
  for part, needles in PARTS:
    if any(needle in source for needle in needles):
      return part
  return REST


def traced_seconds(run, parts: dict[str, str], containers: set[str]) -> dict[str, float]:
  """Seconds per part of the operations the profiler records during `run()`."""
  with tempfile.TemporaryDirectory() as trace_dir:
    jax.profiler.start_trace(trace_dir, create_perfetto_trace=True)
    run()
    jax.profiler.stop_trace()
    trace_file = next(pathlib.Path(trace_dir).rglob("*.trace.json.gz"))
    events = json.load(gzip.open(trace_file))
  events = events["traceEvents"] if isinstance(events, dict) else events
  seconds = collections.Counter()
  for event in events:
    op = event.get("args", {}).get("hlo_op")
    if event.get("ph") == "X" and op and op not in containers:
      seconds[parts.get(op, REST)] += event["dur"] / 1e6
  return seconds


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  add_model_flags(parser, hidden=512, layers=8, vocab=126464)
  parser.add_argument("--gen-length", type=int, default=32)
  parser.add_argument("--batch", type=int, default=1)
  parser.add_argument("--repeats", type=int, default=2)
  parser.add_argument("--text-only", action="store_true", help="prompts of 62 text tokens, no image")
  args = parser.parse_args()

  model = build_model(args)
  samples = prompts(model, args.batch, text_only=args.text_only)
  params = random_params(model, samples[0])
  settings = SamplerSettings(gen_length=args.gen_length, steps=args.gen_length, block_length=args.gen_length,
                             stop_sequences=())
  prompt, lengths = collate_prompts(model, samples)
  keys = row_keys(0, args.batch)
  compiled = program(model, settings).lower(params, prompt, lengths, keys).compile()
  parts, containers = hlo_parts(compiled.as_text())
  vocab_limit = settings.resolve(model.config).vocab_limit
  mask_id = model.config.tokens.mask

  @jax.jit
  def forward(params, prompt, lengths):
    """One step's model work on the fully masked canvas: the tower over every position, the head over the answer."""
    canvas = build_canvas(model, params, prompt, lengths, args.gen_length, (), mask_id, False)
    den = Denoiser(model, params, canvas, args.gen_length, vocab_limit)
    masks = jnp.full((args.batch, args.gen_length), mask_id, jnp.int32)
    hidden, _ = den.full(den.generated_embeds(masks, jnp.ones(masks.shape, bool)), 0)
    return den.logits(hidden)

  @jax.jit
  def encode(params, prompt, lengths):
    return build_canvas(model, params, prompt, lengths, args.gen_length, (), mask_id, False).prompt_embeds

  runs = {"decode": lambda: jax.block_until_ready(compiled(params, prompt, lengths, keys)),
          "forward": lambda: jax.block_until_ready(forward(params, prompt, lengths)),
          "encode": lambda: jax.block_until_ready(encode(params, prompt, lengths))}
  wall, _ = alternate(runs, args.repeats)
  steps = args.gen_length
  per_step = (wall["decode"] - wall["encode"]) / steps

  print(f"model: text hidden {args.hidden}, layers {args.layers}, vocab {args.vocab}; batch {args.batch}, prompt "
        f"{samples[0].length} tokens, gen_length {steps} = steps = block_length, exact, float32 on "
        f"{jax.devices()[0].platform} ({os.cpu_count()} cores), attention {model.compute.attention_impl!r}")
  print(f"decode {wall['decode']:.2f} s: the prompt's encoding {wall['encode']:.3f} s, then {per_step:.3f} s per step; "
        f"one jitted forward (tower + head over the answer) {wall['forward'] - wall['encode']:.3f} s: a step costs "
        f"{per_step / (wall['forward'] - wall['encode']):.2f}x a forward")
  seconds = traced_seconds(runs["decode"], parts, containers)
  total = sum(seconds.values())
  print(f"\ntraced operations of one decode ({total:.2f} s):")
  for part in [p for p, _ in PARTS] + [REST]:
    print(f"  {part:62s} {seconds[part]:7.3f} s  {100 * seconds[part] / total:5.1f}%  "
          f"{1000 * seconds[part] / steps:8.1f} ms per step")


if __name__ == "__main__":
  main()

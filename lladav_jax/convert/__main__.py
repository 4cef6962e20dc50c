"""`python -m tools.convert_weights {import,assemble,export,export-peft} ...` (or `lladav-convert`, or
`python -m lladav_jax.convert`): see docs/convert.md.

Exit status 0 on success, 1 when the inputs have problems (all listed on stderr; nothing written).
"""

import argparse
import sys

from lladav_jax import cli
from lladav_jax.convert import operations, peft_export
from lladav_jax.convert.problems import ConversionError
from lladav_jax.convert.safetensors_stream import parse_size


def _common(parser: argparse.ArgumentParser, *, scan: bool = True) -> None:
  parser.add_argument("--dtype", choices=tuple(operations.DTYPES),
                      help="cast every parameter to this dtype (default: keep each tensor's stored dtype)")
  if scan:
    parser.add_argument("--no-scan", dest="scan", action="store_false",
                        help="store layers as layers_0..layers_N instead of one stacked `layers` group "
                             "(load with ComputeConfig(scan_layers=False))")
  parser.add_argument("--dry-run", action="store_true", help="validate and print the mapping table; write nothing")
  parser.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
  parser = cli.ArgumentParser(prog="python -m tools.convert_weights", description=__doc__)
  commands = parser.add_subparsers(dest="command", required=True)

  p = commands.add_parser("import", help="LLaDA-V Hugging Face checkpoint -> orbax checkpoint")
  p.add_argument("src", help="directory with config.json (model_type llava_llada) and the weights "
                             "(*.safetensors or pytorch_model*.bin, sharded with an index or not)")
  p.add_argument("out", nargs="?", help="new output directory (not needed with --dry-run)")
  p.add_argument("--vision-config", help="config.json of the vision tower, when mm_vision_tower names a tower "
                                         "that is neither local nor known")
  _common(p)

  p = commands.add_parser("assemble", help="LLaDA-8B + SigLIP (+ a stage-1 projector) -> stage-1 (stage-2) "
                                           "orbax checkpoint")
  p.add_argument("--llada", required=True, help="LLaDA-8B directory (original or LLaMA-style layout)")
  p.add_argument("--siglip", required=True, help="SigLIP(2) directory (SiglipModel or SiglipVisionModel)")
  p.add_argument("out", nargs="?", help="new output directory (not needed with --dry-run)")
  p.add_argument("--lladav-config", help="a llava_llada config.json whose LLaDA-V settings to use "
                                         "(default: the published anyres_max_4 / spatial_unpad settings)")
  p.add_argument("--projector", help="a stage-1 run's projector: upstream's mm_projector.bin (or the directory "
                                     "holding it); the output is then ready for stage 2")
  p.add_argument("--seed", type=int, default=0, help="seed of the fresh projector and image-newline")
  p.add_argument("--vision-tower-name", help="mm_vision_tower written to config.json (default: the SigLIP path)")
  _common(p)

  p = commands.add_parser("export", help="orbax checkpoint -> LLaDA-V Hugging Face layout")
  p.add_argument("src", help="a checkpoint written by import or assemble")
  p.add_argument("out", nargs="?", help="new output directory (not needed with --dry-run)")
  p.add_argument("--tokenizer", help="directory whose tokenizer files to copy along "
                                     "(default: the checkpoint's tokenizer/)")
  p.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard, e.g. 5GB or 500MB")
  p.add_argument("--adapter", help="a LoRA run's adapters directory (WORKDIR/adapters) to merge into the kernels")
  _common(p, scan=False)

  p = commands.add_parser("export-peft", help="a LoRA run's adapters -> PEFT's adapter layout")
  p.add_argument("src", help="an adapters directory (WORKDIR/adapters)")
  p.add_argument("out", help="new output directory")
  p.set_defaults(dry_run=False, quiet=True)
  return parser


def run(argv: list[str] | None = None) -> int:
  args = build_parser().parse_args(argv)
  if not args.dry_run and not args.out:
    print(f"{args.command}: an output directory is needed (or --dry-run)", file=sys.stderr)
    return 2
  progress = not args.quiet
  try:
    if args.command == "import":
      result = operations.import_lladav(args.src, args.out, dtype=args.dtype, scan=args.scan,
                                     vision_config=args.vision_config, dry_run=args.dry_run, progress=progress)
    elif args.command == "assemble":
      result = operations.assemble(args.llada, args.siglip, args.out, projector=args.projector,
                                lladav_config=args.lladav_config, seed=args.seed,
                                dtype=args.dtype, scan=args.scan, vision_tower_name=args.vision_tower_name,
                                dry_run=args.dry_run, progress=progress)
    elif args.command == "export-peft":
      result = operations.Result(args.out, peft_export.export_peft(args.src, args.out), 0.0)
    else:
      result = operations.export(args.src, args.out, tokenizer=args.tokenizer, dtype=args.dtype, adapter=args.adapter,
                              max_shard_bytes=parse_size(args.max_shard_size), dry_run=args.dry_run,
                              progress=progress)
  except ConversionError as e:
    print(f"error: {e}", file=sys.stderr)
    print("nothing was written", file=sys.stderr)
    return 1
  except (FileExistsError, ValueError) as e:
    print(f"error: {e}", file=sys.stderr)
    return 1
  operations.print_lines(result.lines)
  return 0


def main() -> None:
  """The `lladav-convert` console script."""
  cli.set_platform_flags(host_only=True)
  sys.exit(run())


if __name__ == "__main__":
  main()

"""The three conversions as library calls (the command line in __main__.py is a thin layer over them).

- `import_lladav`: a LLaDA-V Hugging Face checkpoint -> our orbax checkpoint.
- `assemble`: LLaDA-8B (either layout) + SigLIP -> a stage-1 initialisation (projector and
  image-newline freshly initialised from a seed, as upstream does before stage 1); with a stage-1
  projector (upstream's mm_projector.bin) -> a stage-2 initialisation.
- `export`: our checkpoint -> the LLaDA-V Hugging Face layout (with `adapter`: LoRA adapters merged in).

Each validates everything first (raising one ConversionError that lists every problem), then
streams one leaf (or one stacked layer group) at a time into a staging directory that is renamed
into place only when complete.
"""

import dataclasses
import datetime
import pathlib
import shutil
import sys
import time
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from lladav_jax.convert import adapter_dir, checkpoint_dir, key_map, layouts, orbax_io, peft_export, report
from lladav_jax.convert.conversion_plan import (ConversionPlan, Leaf, build_conversion_plan, model_shapes,
                                                stored_tree_problems)
from lladav_jax.convert.problems import ConversionError
from lladav_jax.convert.dtypes import DTYPES as ST_DTYPES
from lladav_jax.convert.dtypes import dtype_name
from lladav_jax.convert.safetensors_stream import write_shards
from lladav_jax.model_config import LLaDAVConfig, ProjectorConfig
from lladav_jax.models import compute
from lladav_jax.tokens import TokenIds

DTYPES = {name: jnp.dtype(name) for name in compute.DTYPES}  # the dtypes parameters may be cast to
DEFAULT_MAX_SHARD_BYTES = 5 * 10**9


@dataclasses.dataclass
class Result:
  out: pathlib.Path | None  # None for a dry run
  lines: list[str]  # the summary, or the mapping table of a dry run
  seconds: float
  plan: ConversionPlan | None = None


def _dtype(name: str | None):
  if name is None:
    return None
  if name not in DTYPES:
    raise ValueError(f"dtype {name!r}: choose one of {', '.join(DTYPES)}")
  return DTYPES[name]


def _now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _copy_tower(src: pathlib.Path, config_json: dict, staging: pathlib.Path) -> None:
  """A vision tower kept inside `src` under its relative mm_vision_tower name goes along, so that the
  name still resolves in the new directory."""
  name = config_json.get("mm_vision_tower")
  tower = layouts.bundled_tower(src, name)
  if tower is not None:
    shutil.copytree(tower, staging / str(name))


def _write_checkpoint(out: pathlib.Path, config_json: dict, plan: ConversionPlan, *, scan: bool, source: dict,
                      tokenizer_from: pathlib.Path | None, progress: bool, tower_from: pathlib.Path | None = None
                      ) -> None:
  bar = report.Progress(plan.nbytes, "writing", enabled=progress)
  leaves = {leaf.path: leaf for leaf in plan.leaves}
  counts = report.tower_counts(plan.leaves)
  with checkpoint_dir.staged(out) as staging:
    checkpoint_dir.write_json(staging / checkpoint_dir.CONFIG_FILE, config_json)
    orbax_io.save(staging / checkpoint_dir.PARAMS_DIR, {p: (l.shape, l.dtype, l.load) for p, l in leaves.items()},
                  on_written=lambda path: bar.advance(leaves[path].nbytes, leaves[path].name))
    bar.close()
    files = checkpoint_dir.tokenizer_files(tokenizer_from) if tokenizer_from else []
    if files:
      (staging / checkpoint_dir.TOKENIZER_DIR).mkdir()
      for file in files:
        shutil.copy2(file, staging / checkpoint_dir.TOKENIZER_DIR / file.name)
    if tower_from is not None:
      _copy_tower(tower_from, config_json, staging)
    # Written last: its presence marks a complete checkpoint.
    checkpoint_dir.write_json(staging / checkpoint_dir.INFO_FILE, {
        "format": checkpoint_dir.FORMAT,
        "format_version": checkpoint_dir.FORMAT_VERSION,
        "created_at": _now(),
        "source": source,
        "scan_layers": scan,
        "dtypes": sorted({str(leaf.dtype) for leaf in plan.leaves}),
        "num_params": {**{k: v["params"] for k, v in counts.items()},
                       "total": sum(v["params"] for v in counts.values())},
        "num_bytes": plan.nbytes,
        "num_leaves": len(plan.leaves),
        "num_source_tensors": sum(leaf.num_source_tensors for leaf in plan.leaves),
        "skipped_source_keys": {reason: len(keys) for reason, keys in plan.skipped.items()},
        "notes": plan.notes,
        "tokenizer_files": [f.name for f in files],
    })


def import_lladav(src, out=None, *, dtype: str | None = None, scan: bool = True,
                  vision_config: str | pathlib.Path | None = None, dry_run: bool = False,
                  progress: bool = True) -> Result:
  """A LLaDA-V (`llava_llada`) checkpoint directory -> our checkpoint at `out`."""
  start = time.monotonic()
  src = pathlib.Path(src)
  vision = layouts.read_json(vision_config) if vision_config else None
  config, source_json = layouts.lladav_config(src, vision)
  plan = build_conversion_plan(f"import {src}", [layouts.lladav_part(src, config, scan=scan)],
                               model_shapes(config, scan), _dtype(dtype))
  if dry_run:
    return Result(None, report.mapping_table(plan), time.monotonic() - start, plan)
  out = pathlib.Path(out)
  _write_checkpoint(out, layouts.merged_config_json(source_json, config), plan, scan=scan,
                    source={"kind": "llava_llada", "path": str(src.resolve())}, tokenizer_from=src,
                    progress=progress, tower_from=src)
  seconds = time.monotonic() - start
  return Result(out, report.summary(f"imported {src} -> {out} (scan_layers={scan})", plan, seconds), seconds, plan)


def initial_leaves(config: LLaDAVConfig, shapes: dict, seed: int, dtype) -> list[Leaf]:
  """Projector and image-newline as upstream initialises them before stage 1: torch's nn.Linear
  default (weight and bias ~ U(+-1/sqrt(fan_in))) and randn(width) / sqrt(width). Each leaf has its
  own seeded stream, so the values do not depend on the order of writing."""
  dtype = np.dtype(dtype or np.float32)

  def uniform(path, stream):
    fan_in = shapes[path[:-1] + ("kernel",)][0]
    bound = 1.0 / np.sqrt(fan_in)
    return lambda: np.random.default_rng([seed, stream]).uniform(
        -bound, bound, shapes[path]).astype(np.float32).astype(dtype)

  leaves = []
  for n in range(1, config.projector.depth + 1):
    for stream, kind in enumerate(("kernel", "bias"), start=2 * n):
      path = ("mm_projector", f"linear_{n}", kind)
      leaves.append(Leaf(path, shapes[path], dtype, f"initialised: U(+-1/sqrt(fan_in)), seed {seed}",
                         uniform(path, stream)))
  width = shapes[("image_newline",)][0]
  leaves.append(Leaf(("image_newline",), (width,), dtype, f"initialised: N(0, 1/width), seed {seed}",
                     lambda: (np.random.default_rng([seed, 1]).standard_normal(width, np.float32)
                              / np.float32(np.sqrt(width))).astype(dtype)))
  return leaves


_TEXT_DIMS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
              "num_key_value_heads", "rope_theta", "rms_norm_eps")


def _assembled_config(text, vision, llada_dir: pathlib.Path, siglip_dir: pathlib.Path, lladav_config,
                      vision_tower_name) -> tuple[LLaDAVConfig, dict]:
  """The LLaDA-V config of an assembled checkpoint. Special ids: the LLaDA tokenizer's when its
  directory has a tokenizer.json, else the LLaDA-V or LLaDA config.json's (see TokenIds)."""
  tokens = layouts.tokenizer_token_ids(llada_dir)
  if lladav_config is None:
    name = vision_tower_name or str(siglip_dir.resolve())
    tokens = tokens or TokenIds.from_config_json(layouts.read_config(llada_dir))
    config = LLaDAVConfig(text=text, vision=vision, vision_tower_name=name, tokens=tokens,
                          projector=ProjectorConfig("mlp2x_gelu", vision.hidden_size, text.hidden_size))
    return config, {}
  path = pathlib.Path(lladav_config)
  base_json = layouts.read_json(path)
  try:
    base = LLaDAVConfig.from_hf_config(base_json, vision_config=vision.to_hf_config(), tokens=tokens)
  except (KeyError, ValueError, TypeError) as e:
    raise ConversionError(str(path), [f"{path}: not a supported LLaDA-V config: {e}"]) from e
  differ = [f"{k}: {getattr(base.text, k)} in {path.name}, {getattr(text, k)} in the LLaDA config"
            for k in _TEXT_DIMS if getattr(base.text, k) != getattr(text, k)]
  if differ:
    raise ConversionError(str(path), differ)
  if vision_tower_name:
    base = dataclasses.replace(base, vision_tower_name=vision_tower_name)
  return base, base_json


def assemble(llada, siglip, out=None, *, projector=None, lladav_config=None, seed: int = 0,
             dtype: str | None = None, scan: bool = True, vision_tower_name: str | None = None,
             dry_run: bool = False, progress: bool = True) -> Result:
  """LLaDA-8B + SigLIP -> a stage-1 LLaDA-V initialisation at `out`; with `projector` (a stage-1
  run's mm_projector.bin, or its directory) -> a stage-2 initialisation.

  Without `projector`, the projector and image-newline are seeded as upstream initialises them
  before stage 1. With it, the projector comes from the file, and the image-newline too when the
  file holds one; otherwise it is seeded, as upstream's stage 2 creates it (stage 1 has none).
  The LLaDA-V settings (anyres, merge type, ...) are the published ones unless `lladav_config`
  (a llava_llada config.json) is given; the tower dims always come from the two checkpoints.
  """
  start = time.monotonic()
  llada, siglip = pathlib.Path(llada), pathlib.Path(siglip)
  text, vision = layouts.llada_config(llada), layouts.siglip_config(siglip)
  config, base_json = _assembled_config(text, vision, llada, siglip, lladav_config, vision_tower_name)
  shapes = model_shapes(config, scan)
  parts = [layouts.llada_part(llada, config.text, scan=scan), layouts.siglip_part(siglip, config, scan=scan)]
  what = f"assemble {llada} + {siglip}"
  source = {"kind": "assemble", "llada": str(llada.resolve()), "llada_layout": parts[0].name,
            "siglip": str(siglip.resolve()), "seed": seed}
  fresh = initial_leaves(config, shapes, seed, _dtype(dtype))
  if projector is None:
    notes = [f"mm_projector and image_newline are freshly initialised (seed {seed})"]
  else:
    file = layouts.projector_file(projector)
    parts.append(layouts.projector_part(file, config))
    provided = {entry.path for entry in parts[-1].entries}
    fresh = [leaf for leaf in fresh if leaf.path not in provided]
    what += f" + {file}"
    source["projector"] = str(file.resolve())
    notes = [f"mm_projector from the stage-1 projector {file}"]
    notes.append(f"image_newline from {file}" if ("image_newline",) in provided else
                 f"image_newline is freshly initialised (seed {seed}), as upstream's stage 2 does")
  plan = build_conversion_plan(what, parts, shapes, _dtype(dtype), extra_leaves=fresh, notes=notes)
  if dry_run:
    return Result(None, report.mapping_table(plan), time.monotonic() - start, plan)
  out = pathlib.Path(out)
  _write_checkpoint(out, layouts.merged_config_json(base_json, config), plan, scan=scan, source=source,
                    tokenizer_from=llada, progress=progress)
  seconds = time.monotonic() - start
  title = f"assembled {llada} + {siglip}{f' + {file}' if projector is not None else ''} -> {out}"
  return Result(out, report.summary(f"{title} (scan_layers={scan})", plan, seconds), seconds, plan)


def _export_specs(config: LLaDAVConfig, scan: bool, stored: dict, dtype) -> tuple[list, list]:
  """(entries, [(hf key, hf shape, safetensors dtype)]) in writing order; validates the stored tree."""
  problems = stored_tree_problems(stored, model_shapes(config, scan))
  if problems:
    raise ConversionError("export: the checkpoint does not fit its config.json", problems)
  entries = key_map.lladav_entries(config, scan=scan)
  specs = []
  for entry in entries:
    shape, stored_dtype = stored[entry.path]
    layer_shape = key_map.hf_shape(entry.transform, shape[1:] if entry.stacked else shape)
    specs += [(key, layer_shape, dtype_name(dtype or stored_dtype)) for key in entry.hf_keys]
  return entries, specs


def _merged_adapters(adapter, config: LLaDAVConfig, scan: bool) -> tuple[dict, float]:
  """(adapter leaves, scaling) of an adapters directory that fits the checkpoint being exported."""
  try:
    info = adapter_dir.read_info(adapter)
  except ValueError as e:
    raise ConversionError("export --adapter", [str(e)]) from None
  problems = adapter_dir.fit_problems(adapter, adapter_dir.expected_shapes(info, config, scan))
  if info.scan_layers != scan:
    problems.insert(0, f"{adapter}: layers {'stacked' if info.scan_layers else 'unstacked'}, the checkpoint's "
                       f"{'stacked' if scan else 'unstacked'}")
  if problems:
    raise ConversionError(f"export --adapter: {adapter} does not fit the checkpoint", problems)
  return adapter_dir.read_all(adapter), info.lora.scaling


def export(src, out=None, *, tokenizer=None, dtype: str | None = None, adapter=None,
           max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES, dry_run: bool = False, progress: bool = True) -> Result:
  """Our checkpoint -> the LLaDA-V Hugging Face layout (safetensors shards, index, config.json,
  tokenizer files from `tokenizer` or from the checkpoint's own tokenizer/ directory). With
  `adapter` (an adapters directory), each adapted kernel is written merged: W + (alpha / rank) A B."""
  start = time.monotonic()
  src = pathlib.Path(src)
  info = checkpoint_dir.read_info(src)
  config_json = layouts.read_config(src)
  config = LLaDAVConfig.from_hf_config(config_json)
  scan = bool(info["scan_layers"])
  cast = _dtype(dtype)
  stored = orbax_io.metadata(src / checkpoint_dir.PARAMS_DIR)
  entries, specs = _export_specs(config, scan, stored, cast)
  adapters, scaling = _merged_adapters(adapter, config, scan) if adapter else ({}, 0.0)
  tokenizer_dir = pathlib.Path(tokenizer) if tokenizer else src / checkpoint_dir.TOKENIZER_DIR
  if tokenizer and not checkpoint_dir.tokenizer_files(tokenizer_dir):
    raise ConversionError("export", [f"{tokenizer_dir}: no tokenizer files "
                                     f"({', '.join(checkpoint_dir.TOKENIZER_FILES)})"])
  if dry_run:
    lines = [f"{key}  {'x'.join(map(str, shape))}  {dt}" for key, shape, dt in specs]
    return Result(None, lines, time.monotonic() - start)

  total = sum(int(np.prod(s, dtype=np.int64)) * np.dtype(stored[e.path][1] if cast is None else cast).itemsize
              for e in entries for s in [stored[e.path][0]])
  bar = report.Progress(total, "exporting", enabled=progress)

  def tensors():
    for entry in entries:
      leaf = orbax_io.read_leaf(src / checkpoint_dir.PARAMS_DIR, entry.path)
      leaf = peft_export.merge(entry.path, leaf, adapters, scaling)
      if cast is not None:
        leaf = leaf.astype(cast)
      bar.advance(leaf.nbytes, "/".join(entry.path))
      yield from key_map.params_to_hf(traverse_util.unflatten_dict({entry.path: leaf}), [entry])
      del leaf

  out = pathlib.Path(out)
  with checkpoint_dir.staged(out) as staging:
    index = write_shards(staging, specs, tensors(), max_shard_bytes)
    bar.close()
    dtypes = sorted({dt for _, _, dt in specs})
    exported = dict(config_json)
    if len(dtypes) == 1:
      exported["torch_dtype"] = str(cast or next(iter(stored.values()))[1])
    checkpoint_dir.write_json(staging / checkpoint_dir.CONFIG_FILE, exported)
    for file in checkpoint_dir.tokenizer_files(tokenizer_dir):
      shutil.copy2(file, staging / file.name)
    _copy_tower(src, config_json, staging)
  seconds = time.monotonic() - start
  shards = len(set(index["weight_map"].values()))
  lines = [f"exported {src} -> {out}",
           f"  {len(specs)} tensors in {shards} shard(s), {report.gigabytes(index['metadata']['total_size'])}, "
           f"dtype {', '.join(str(ST_DTYPES[d]) for d in dtypes)}, in {seconds:.1f} s "
           f"({index['metadata']['total_size'] / 1e6 / max(seconds, 1e-9):.0f} MB/s)"]
  return Result(out, lines, seconds)


def print_lines(lines: list[str], stream: Any = None) -> None:
  stream = stream or sys.stdout
  for line in lines:
    print(line, file=stream)

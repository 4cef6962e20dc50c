"""The Hugging Face checkpoint layouts we read, and how their config.json become module configs.

- LLaDA-V (`llava_llada`): language tower under `model.`, vision tower under
  `model.vision_tower.vision_tower.vision_model.` (26 of so400m's 27 layers as published; a full
  tower is accepted and its unused layers are skipped), `model.mm_projector.{0,2}`, `model.image_newline`.
- LLaDA-8B: the original OLMo-derived layout (`model.transformer.blocks.N.ff_proj`, config keys
  `d_model`, `n_heads`, ...) or the LLaMA-style renamed one (`model.layers.N.mlp.gate_proj`).
- SigLIP / SigLIP2 fixed-resolution (`vision_model.` keys, or none for transformers 5's
  SiglipVisionModel.save_pretrained); the text tower and the pooling head are ignored.
- A stage-1 projector: upstream's `mm_projector.bin` (`model.mm_projector.{0,2}.*`, any prefix
  before `mm_projector.`), maybe with the image-newline vector under the same prefix.

Every directory is read through tensor_dir.TensorDir: safetensors or PyTorch `.bin` files alike.
"""

import dataclasses
import json
import pathlib
import re
from typing import Any, Callable, Mapping

from lladav_jax.convert import key_map
from lladav_jax.convert.problems import ConversionError
from lladav_jax.convert.tensor_dir import TensorDir
from lladav_jax.model_config import LLaDAConfig, LLaDAVConfig, SiglipConfig
from lladav_jax.tokens import TokenIds

CONFIG_FILE = "config.json"


@dataclasses.dataclass
class Part:
  """One checkpoint directory and the parameters it provides."""

  name: str  # for messages: "LLaDA-V", "LLaDA", "SigLIP"
  reader: TensorDir
  entries: list[key_map.Entry]
  # Why a key that no entry uses may be skipped (None: it is unexpected, which is an error).
  skip_reason: Callable[[str], str | None] = lambda key: None
  # Parameters this checkpoint may lack (filled with zeros), with the reason why that is harmless.
  optional: dict[tuple[str, ...], str] = dataclasses.field(default_factory=dict)


def read_config(directory: str | pathlib.Path) -> dict[str, Any]:
  """The config.json of a checkpoint directory."""
  path = pathlib.Path(directory) / CONFIG_FILE
  if not path.is_file():
    raise ConversionError(str(directory), [f"{path}: missing (every checkpoint directory needs its config.json)"])
  return read_json(path)


def read_json(path: str | pathlib.Path) -> dict[str, Any]:
  """A JSON config file, or the config.json of a directory."""
  path = pathlib.Path(path)
  if path.is_dir():
    return read_config(path)
  try:
    value = json.loads(path.read_text())
  except (OSError, ValueError) as e:
    raise ConversionError(str(path), [f"{path}: not a readable JSON file ({e})"]) from e
  if not isinstance(value, dict):
    raise ConversionError(str(path), [f"{path}: expected a JSON object"])
  return value


def _config_error(directory, what: str, error: Exception) -> ConversionError:
  return ConversionError(str(directory), [f"{pathlib.Path(directory) / CONFIG_FILE}: {what}: {error}"])


# ---------------------------------------------------------------------------------------------
# LLaDA-8B

# Original-layout config keys: (OLMo default when the key is absent, the values this model supports).
_ORIGINAL_LLADA_REQUIREMENTS = {
    "block_type": ("sequential", ("llama",)),
    "activation_type": ("swiglu", ("silu",)),
    "layer_norm_type": ("default", ("rms",)),
    "rope": (False, (True,)),
    "alibi": (False, (False,)),
    "weight_tying": (True, (False,)),
    "include_bias": (False, (False,)),
    "include_qkv_bias": (False, (False, None)),
    "bias_for_layer_norm": (None, (False, None)),
    "layer_norm_with_affine": (True, (True,)),
    "attention_layer_norm": (False, (False,)),
    "input_emb_norm": (False, (False,)),
    "scale_logits": (False, (False,)),
    "rope_scaling": (None, (None,)),
}


def llada_config_from_original(d: Mapping[str, Any]) -> LLaDAConfig:
  """Translates the original LLaDA-8B config.json (OLMo-style keys) into LLaDAConfig."""
  bad = [f"{key} = {d.get(key, default)!r} (supported: {', '.join(map(repr, allowed))})"
         for key, (default, allowed) in _ORIGINAL_LLADA_REQUIREMENTS.items() if d.get(key, default) not in allowed]
  if d.get("multi_query_attention") and d.get("n_kv_heads") not in (None, 1):
    bad.append(f"multi_query_attention with n_kv_heads = {d['n_kv_heads']!r}")
  if bad:
    raise ValueError("unsupported LLaDA settings: " + "; ".join(bad))
  heads = int(d["n_heads"])
  kv_heads = d.get("n_kv_heads") or (1 if d.get("multi_query_attention") else heads)
  defaults = LLaDAConfig()
  return LLaDAConfig(
      vocab_size=int(d.get("embedding_size") or d["vocab_size"]),  # the embedding's row count
      hidden_size=int(d["d_model"]),
      intermediate_size=int(d.get("mlp_hidden_size") or d.get("mlp_ratio", 4) * int(d["d_model"])),
      num_hidden_layers=int(d["n_layers"]),
      num_attention_heads=heads,
      num_key_value_heads=int(kv_heads),
      rope_theta=float(d.get("rope_theta", 10000.0)),
      rms_norm_eps=float(d.get("rms_norm_eps", 1e-5)),
      max_position_embeddings=int(d.get("max_sequence_length", 1024)),
      initializer_range=float(d.get("init_std", 0.02)),
      bos_token_id=d.get("bos_token_id", defaults.bos_token_id),
      eos_token_id=d.get("eos_token_id", defaults.eos_token_id),
      pad_token_id=d.get("pad_token_id"),
  )


def llada_config(directory) -> LLaDAConfig:
  """Either config.json style: original (`d_model`, `n_layers`, ...) or LLaMA-style."""
  d = read_config(directory)
  try:
    return llada_config_from_original(d) if "d_model" in d else LLaDAConfig.from_hf_config(d)
  except (KeyError, ValueError, TypeError) as e:
    raise _config_error(directory, "not a supported LLaDA config", e) from e


def _rotary_skip_reason(key: str) -> str | None:
  # Older transformers saved RoPE's inverse frequencies as a buffer; they follow from rope_theta.
  return "RoPE inverse frequencies: recomputed from rope_theta" if key.endswith("rotary_emb.inv_freq") else None


def llada_part(directory, config: LLaDAConfig, *, scan: bool) -> Part:
  """The language tower from a LLaDA-8B directory, in whichever layout its tensors use."""
  reader = TensorDir(directory)
  original = any(k.startswith("model.transformer.") for k in reader.tensors)
  if original:
    entries = key_map.llada_original_entries(config, scan=scan, flax_prefix=("language_model",))
  else:
    entries = key_map.llada_entries(config, scan=scan, flax_prefix=("language_model",))
  return Part("LLaDA (original layout)" if original else "LLaDA (LLaMA layout)", reader, entries, _rotary_skip_reason)


# ---------------------------------------------------------------------------------------------
# SigLIP vision tower


def siglip_config(directory) -> SiglipConfig:
  d = read_config(directory)
  model_type = d.get("model_type")
  if model_type not in ("siglip", "siglip_vision_model"):
    hint = (" (SigLIP2 NaFlex towers embed patches with a Linear at variable resolution; use the "
            "fixed-resolution SigLIP2, e.g. google/siglip2-so400m-patch14-384, whose model_type is 'siglip')"
            if model_type == "siglip2" else "")
    raise _config_error(directory, "not a SigLIP config", ValueError(f"model_type {model_type!r}{hint}"))
  try:
    return SiglipConfig.from_hf_config(d)
  except (KeyError, ValueError, TypeError) as e:
    raise _config_error(directory, "not a supported SigLIP config", e) from e


def _vision_skip_reason(key: str, prefix: str, config: LLaDAVConfig) -> str | None:
  """Vision keys a LLaDA-V model does not use: layers past the selected one, the pooling head."""
  if not key.startswith(prefix):
    return None
  rest = key[len(prefix):]
  depth, total = config.vision_feature_depth, config.vision.num_hidden_layers
  match = re.match(r"encoder\.layers\.(\d+)\.", rest)
  if match and depth <= int(match.group(1)) < total:
    return (f"vision layer {match.group(1)}: past the selected layer (mm_vision_select_layer "
            f"{config.vision_select_layer} uses layers 0..{depth - 1} of {total})")
  if rest.startswith("head."):
    return "vision pooling head: LLaDA-V does not use it"
  return None


def siglip_part(directory, config: LLaDAVConfig, *, scan: bool) -> Part:
  """The vision tower from a SigLIP directory (a full SiglipModel or a SiglipVisionModel)."""
  reader = TensorDir(directory)
  prefix = "vision_model." if any(k.startswith("vision_model.") for k in reader.tensors) else ""
  entries = key_map.siglip_entries(config.vision, num_layers=config.vision_feature_depth, scan=scan,
                                   hf_prefix=prefix, flax_prefix=("vision_tower",))

  def skip_reason(key: str) -> str | None:
    if key.startswith("text_model.") or key in ("logit_scale", "logit_bias"):
      return "SigLIP text tower: LLaDA-V does not use it"
    return _vision_skip_reason(key, prefix, config)
  return Part("SigLIP", reader, entries, skip_reason)


# ---------------------------------------------------------------------------------------------
# A stage-1 projector

PROJECTOR_FILE = "mm_projector.bin"


def projector_file(path) -> pathlib.Path:
  """The projector weights a --projector path names: a file, or a directory holding mm_projector.bin."""
  path = pathlib.Path(path)
  return path / PROJECTOR_FILE if path.is_dir() and (path / PROJECTOR_FILE).is_file() else path


def projector_part(path, config: LLaDAVConfig) -> Part:
  """The projector trained in stage 1, as upstream saves it (llava_trainer._save_checkpoint and
  train.safe_save_model_for_hf_trainer: `torch.save` of the parameters whose names contain
  `mm_projector`, i.e. `model.mm_projector.0.weight`, ...). Upstream loads it back by the part after
  `mm_projector.` (llava_arch.get_w), so any prefix is accepted here too. An `image_newline` under the
  same prefix is taken along; upstream's stage 1 has none (its merge type is `flat`)."""
  path = projector_file(path)
  reader = TensorDir(path)
  prefixes = sorted({key[:key.index("mm_projector.")] for key in reader.tensors if "mm_projector." in key})
  if len(prefixes) > 1:
    reader.problems.append(f"{path}: projector tensors under several prefixes ({', '.join(map(repr, prefixes))})")
  prefix = prefixes[0] if prefixes else key_map.LLADAV_TEXT_PREFIX
  entries = key_map.projector_entries(config.projector, hf_prefix=f"{prefix}mm_projector.")
  if f"{prefix}image_newline" in reader.tensors:
    entries.append(key_map.Entry(("image_newline",), (f"{prefix}image_newline",), "identity"))
  stage1_config = reader.directory / CONFIG_FILE
  if stage1_config.is_file():  # upstream's stage 1 saves its config.json next to mm_projector.bin
    stage1_type = read_json(stage1_config).get("mm_projector_type")
    if stage1_type is not None and stage1_type != config.projector.projector_type:
      reader.problems.append(f"{stage1_config}: mm_projector_type {stage1_type!r} in stage 1, but the assembled "
                             f"model's is {config.projector.projector_type!r} (give --lladav-config a config "
                             "with the stage-1 projector type)")
  return Part("projector", reader, entries)


# ---------------------------------------------------------------------------------------------
# LLaDA-V


def local_tower(directory, name) -> pathlib.Path | None:
  """The vision tower directory `mm_vision_tower` names, if it is a local one with a config.json: a
  relative name inside the checkpoint `directory` (where upstream-style checkpoints keep it), else
  as given (absolute, or relative to the current directory)."""
  if not name:
    return None
  for candidate in (pathlib.Path(directory) / str(name), pathlib.Path(str(name))):
    if (candidate / CONFIG_FILE).is_file():
      return candidate
  return None


def bundled_tower(directory, name) -> pathlib.Path | None:
  """The tower directory when it lives inside the checkpoint `directory` under a relative name: it
  travels with the checkpoint (import and export copy it along)."""
  tower = local_tower(directory, name)
  if tower is None or pathlib.Path(str(name)).is_absolute():
    return None
  return tower if tower.resolve().is_relative_to(pathlib.Path(directory).resolve()) else None


def lladav_config(directory, vision_config: Mapping[str, Any] | None = None) -> tuple[LLaDAVConfig, dict]:
  """Reads a `llava_llada` config.json -> (config, the raw dict).

  The vision tower's dims come from, in order: `vision_config` (a config.json given by the
  caller), a `vision_config` entry in the file, the tower's own config.json when
  `mm_vision_tower` is a local directory (`local_tower`), the known tower that `mm_vision_tower` names.
  """
  d = read_config(directory)
  if vision_config is None and "vision_config" not in d:
    tower = local_tower(directory, d.get("mm_vision_tower"))
    if tower is not None:
      vision_config = read_config(tower)
  try:
    tokens = None if TokenIds.HF_KEY in d else tokenizer_token_ids(directory)
    config = LLaDAVConfig.from_hf_config(d, vision_config=vision_config, tokens=tokens)
  except (KeyError, ValueError, TypeError) as e:
    hint = (" (pass the tower's config.json with --vision-config)"
            if "unknown tower" in str(e) else "")
    raise _config_error(directory, "not a supported LLaDA-V config", ValueError(f"{e}{hint}")) from e
  return config, d


def tokenizer_token_ids(directory) -> TokenIds | None:
  """Special-token ids from the directory's tokenizer.json, None when it has none."""
  path = pathlib.Path(directory) / "tokenizer.json"
  return TokenIds.from_tokenizer_json(path) if path.is_file() else None


def lladav_part(directory, config: LLaDAVConfig, *, scan: bool) -> Part:
  reader = TensorDir(directory)
  entries = key_map.lladav_entries(config, scan=scan)
  optional = {}
  if not config.uses_image_newline:
    optional[("image_newline",)] = (f"mm_patch_merge_type {config.patch_merge_type!r} never uses the "
                                    "image-newline vector")
  def skip_reason(key: str) -> str | None:
    return _rotary_skip_reason(key) or _vision_skip_reason(key, key_map.LLADAV_VISION_PREFIX, config)
  return Part("LLaDA-V", reader, entries, skip_reason, optional)


def merged_config_json(source: Mapping[str, Any], config: LLaDAVConfig) -> dict[str, Any]:
  """Our config.json: the modelled fields over the source's other keys (kept for export)."""
  return {**source, **config.to_hf_config()}

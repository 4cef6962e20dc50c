"""Frozen configs of the three towers and of LLaDA-V, with Hugging Face `config.json` round trips.

`LLaDAVConfig.from_hf_config` reads the upstream `llava_llada` config.json; `to_hf_config` writes
one that the upstream PyTorch code loads. Only the fields the model depends on are modelled; an
exporter merges them over the source config.json to keep the rest.

Each field is declared once, with its config.json spelling (`hf_field`): the key, the value a
config.json that lacks it means, and conversions. Keys with the only value the model supports
(`hidden_act`, ...) are checked on reading and written on export.
"""

import dataclasses
import re
from typing import Any, Callable, Mapping

from lladav_jax.tokens import TokenIds

ASPECT_RATIO_MODES = ("anyres", "anyres_max_<N>", "pad", "square")
PATCH_MERGE_TYPES = ("spatial_unpad", "flat")
NEWLINE_POSITIONS = ("grid", "frame", "one_token", "no_token")
SPATIAL_POOL_MODES = ("bilinear", "average")

REQUIRED = object()  # `missing` of a key every config.json must have
_DEFAULT = object()


@dataclasses.dataclass(frozen=True)
class HFKey:
  """How config.json spells a field: its key, the value when the key is absent (a function of the
  whole dict, REQUIRED, or the field's default), and the conversions from and to JSON."""

  key: str
  missing: Any
  read: Callable[[Any], Any] | None
  write: Callable[[Any], Any] | None


def hf_field(default: Any, *, key: str | None = None, missing: Any = _DEFAULT, read=None, write=None):
  """A dataclass field with its config.json spelling (key: the field's name unless given)."""
  return dataclasses.field(default=default, metadata={"hf": (key, missing, read, write)})


def _hf_keys(cls) -> dict[str, HFKey]:
  out = {}
  for f in dataclasses.fields(cls):
    if "hf" in f.metadata:
      key, missing, read, write = f.metadata["hf"]
      out[f.name] = HFKey(key or f.name, f.default if missing is _DEFAULT else missing, read, write)
  return out


def read_hf_fields(cls, d: Mapping[str, Any]) -> dict[str, Any]:
  """{field: value} of every `hf_field` of `cls` from the config.json dict `d`."""
  values = {}
  for name, spec in _hf_keys(cls).items():
    if spec.key in d:
      value = d[spec.key]
    elif spec.missing is REQUIRED:
      raise KeyError(spec.key)
    else:
      value = spec.missing(d) if callable(spec.missing) else spec.missing
    values[name] = value if spec.read is None else spec.read(value)
  return values


def write_hf_fields(config) -> dict[str, Any]:
  """{config.json key: value} of every `hf_field` of `config`, in declaration order."""
  out = {}
  for name, spec in _hf_keys(type(config)).items():
    value = getattr(config, name)
    out[spec.key] = value if spec.write is None else spec.write(value)
  return out


def check_divisible(name: str, value: int, divisor_name: str, divisor: int) -> None:
  if value % divisor:
    raise ValueError(f"{name} {value} is not divisible by {divisor_name} {divisor}")


def check_supported(d: Mapping[str, Any], supported: Mapping[str, Any], what: str) -> None:
  """Keys the model supports one value of: absent, or that value."""
  for key, expected in supported.items():
    value = d.get(key, expected)
    if value != expected:
      raise ValueError(f"{what}: config key {key!r} = {value!r} is not supported (expected {expected!r})")


@dataclasses.dataclass(frozen=True)
class LLaDAConfig:
  """The language tower: a LLaMA-like transformer without causal mask. Defaults: LLaDA-8B; absent
  config.json keys mean what transformers' LlamaConfig defaults to."""

  vocab_size: int = hf_field(126464, missing=REQUIRED, read=int)
  hidden_size: int = hf_field(4096, missing=REQUIRED, read=int)
  intermediate_size: int = hf_field(12288, missing=REQUIRED, read=int)
  num_hidden_layers: int = hf_field(32, missing=REQUIRED, read=int)
  num_attention_heads: int = hf_field(32, missing=REQUIRED, read=int)
  # Absent (or null): one key/value head per query head.
  num_key_value_heads: int = hf_field(32, missing=lambda d: None, read=None)
  rope_theta: float = hf_field(500000.0, missing=10000.0, read=float)
  rms_norm_eps: float = hf_field(1e-5, missing=1e-6, read=float)
  max_position_embeddings: int = hf_field(16384, missing=2048, read=int)
  initializer_range: float = hf_field(0.02, read=float)  # std of a random init of the weights
  bos_token_id: int | None = hf_field(126080, missing=None)
  eos_token_id: int | None = hf_field(126081, missing=None)
  pad_token_id: int | None = hf_field(None)

  HF_HEADER = {"model_type": "llada", "architectures": ["LLaDAModelLM"]}
  # Written after the fields; those in HF_CHECKED must have these values when a config.json has them.
  HF_CONSTANTS = {"hidden_act": "silu", "attention_bias": False, "attention_dropout": 0.0,
                  "tie_word_embeddings": False, "rope_scaling": None, "pretraining_tp": 1, "use_cache": False}
  HF_CHECKED = {"hidden_act": HF_CONSTANTS["hidden_act"], "attention_bias": HF_CONSTANTS["attention_bias"],
                "mlp_bias": False, "tie_word_embeddings": HF_CONSTANTS["tie_word_embeddings"],
                "rope_scaling": HF_CONSTANTS["rope_scaling"]}

  def __post_init__(self):
    check_divisible("hidden_size", self.hidden_size, "num_attention_heads", self.num_attention_heads)
    check_divisible("num_attention_heads", self.num_attention_heads, "num_key_value_heads", self.num_key_value_heads)

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_hf_config(cls, d: Mapping[str, Any]) -> "LLaDAConfig":
    check_supported(d, cls.HF_CHECKED, "LLaDA config")
    values = read_hf_fields(cls, d)
    values["num_key_value_heads"] = int(values["num_key_value_heads"] or values["num_attention_heads"])
    return cls(**values)

  def to_hf_config(self) -> dict[str, Any]:
    return {**self.HF_HEADER, **write_hf_fields(self), **self.HF_CONSTANTS}


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
  """The vision tower (fixed-resolution SigLIP). `num_hidden_layers` is the tower's full depth.
  Defaults: SigLIP2 so400m-patch14-384, also for the keys a config.json lacks."""

  hidden_size: int = hf_field(1152, read=int)
  intermediate_size: int = hf_field(4304, read=int)
  num_hidden_layers: int = hf_field(27, read=int)
  num_attention_heads: int = hf_field(16, read=int)
  num_channels: int = hf_field(3, read=int)
  image_size: int = hf_field(384, read=int)
  patch_size: int = hf_field(14, read=int)
  layer_norm_eps: float = hf_field(1e-6, read=float)

  HF_HEADER = {"model_type": "siglip_vision_model"}
  HF_CONSTANTS = {"hidden_act": "gelu_pytorch_tanh", "attention_dropout": 0.0}
  HF_CHECKED = {"hidden_act": HF_CONSTANTS["hidden_act"]}

  def __post_init__(self):
    check_divisible("vision hidden_size", self.hidden_size, "num_attention_heads", self.num_attention_heads)

  @property
  def patches_per_side(self) -> int:
    return self.image_size // self.patch_size

  @property
  def num_patches(self) -> int:
    return self.patches_per_side ** 2

  @classmethod
  def from_hf_config(cls, d: Mapping[str, Any]) -> "SiglipConfig":
    """Accepts a `siglip_vision_model` config or a full SigLIP/SigLIP2 config (uses its vision part)."""
    if "vision_config" in d:
      d = d["vision_config"]
    check_supported(d, cls.HF_CHECKED, "SigLIP vision config")
    return cls(**read_hf_fields(cls, d))

  def to_hf_config(self) -> dict[str, Any]:
    return {**self.HF_HEADER, **write_hf_fields(self), **self.HF_CONSTANTS}


# Vision towers whose dims are known when a config names them without carrying their config.json.
_KNOWN_VISION_TOWERS = {"siglip2-so400m-patch14-384": SiglipConfig(), "siglip-so400m-patch14-384": SiglipConfig()}


@dataclasses.dataclass(frozen=True)
class ProjectorConfig:
  """The multimodal projector: `linear` or `mlp<N>x_gelu` (Linear, then (GELU, Linear) N-1 times).
  `out_features` is the language tower's width (not part of config.json)."""

  projector_type: str = hf_field("mlp2x_gelu", key="mm_projector_type", missing="linear")
  in_features: int = hf_field(1152, key="mm_hidden_size", missing=REQUIRED, read=int)
  out_features: int = 4096

  def __post_init__(self):
    self.depth  # validates projector_type

  @property
  def depth(self) -> int:
    if self.projector_type == "linear":
      return 1
    match = re.fullmatch(r"mlp(\d+)x_gelu", self.projector_type)
    if not match or int(match.group(1)) < 1:
      raise ValueError(f"mm_projector_type {self.projector_type!r} is not supported "
                       "(expected 'linear' or 'mlp<N>x_gelu')")
    return int(match.group(1))

  @classmethod
  def from_hf_config(cls, d: Mapping[str, Any], out_features: int) -> "ProjectorConfig":
    return cls(**read_hf_fields(cls, d), out_features=out_features)

  def to_hf_config(self) -> dict[str, Any]:
    return write_hf_fields(self)


def default_grid_pinpoints(tile: int = 384, max_grid: int = 6) -> tuple[tuple[int, int], ...]:
  """(width, height) pinpoints for grids 1x1..NxN, in upstream's order (width-major)."""
  return tuple((i * tile, j * tile) for i in range(1, max_grid + 1) for j in range(1, max_grid + 1))


def parse_grid_pinpoints(value: Any, tile: int) -> tuple[tuple[int, int], ...]:
  """Reads `image_grid_pinpoints` as upstream does: a "(1x1),...,(6x6)" range or a list of pairs.

  Pairs are (width, height), in the order given; the order breaks ties in the grid choice.
  """
  if isinstance(value, str) and "x" in value:
    matches = re.findall(r"\((\d+)x(\d+)\)", value)
    if not matches:
      raise ValueError(f"image_grid_pinpoints {value!r}: expected a range like '(1x1),...,(6x6)'")
    (w0, h0), (w1, h1) = map(int, matches[0]), map(int, matches[-1])
    return tuple((i * tile, j * tile) for i in range(w0, w1 + 1) for j in range(h0, h1 + 1))
  pairs = tuple(tuple(int(x) for x in pair) for pair in value)
  if not pairs or any(len(p) != 2 or min(p) <= 0 for p in pairs):
    raise ValueError(f"image_grid_pinpoints {value!r}: expected positive (width, height) pairs")
  return pairs


def grid_pinpoints_range(pinpoints: tuple[tuple[int, int], ...], tile: int) -> str | None:
  """The "(1x1),...,(6x6)" range (in crops of `tile`) that `parse_grid_pinpoints` expands into
  `pinpoints`, or None when they are not such a range."""
  (w0, h0), (w1, h1) = pinpoints[0], pinpoints[-1]
  text = f"({w0 // tile}x{h0 // tile}),...,({w1 // tile}x{h1 // tile})"
  try:
    return text if parse_grid_pinpoints(text, tile) == tuple(pinpoints) else None
  except ValueError:
    return None


@dataclasses.dataclass(frozen=True)
class LLaDAVConfig:
  """LLaDA-V: vision tower -> projector -> features spliced into the language tower's input.
  Defaults: the published model; absent config.json keys mean what upstream's defaults are."""

  text: LLaDAConfig = LLaDAConfig()
  vision: SiglipConfig = SiglipConfig()
  projector: ProjectorConfig = ProjectorConfig()
  vision_tower_name: str = hf_field("google/siglip2-so400m-patch14-384", key="mm_vision_tower", read=str)
  # Hidden-state index of the vision tower fed to the projector, HF convention: -2 is the output of
  # the penultimate layer, un-normalised (what upstream computes by deleting the last layer).
  vision_select_layer: int = hf_field(-2, key="mm_vision_select_layer", read=int)
  image_aspect_ratio: str = hf_field("anyres_max_4", missing="square")
  # (width, height) pairs, multiples of the crop size; config.json may also hold a "(1x1),...,(6x6)" range.
  image_grid_pinpoints: tuple[tuple[int, int], ...] = hf_field(
      default_grid_pinpoints(), missing=None, write=lambda pairs: [list(p) for p in pairs])
  patch_merge_type: str = hf_field("spatial_unpad", key="mm_patch_merge_type", missing="flat")
  # Video: where image-newline tokens go, and how frames are pooled 2x2.
  newline_position: str = hf_field("grid", key="mm_newline_position", missing="one_token")
  spatial_pool_mode: str = hf_field("bilinear", key="mm_spatial_pool_mode")
  # Maximum length of the spliced sequence (upstream's tokenizer_model_max_length).
  max_length: int | None = hf_field(None, key="tokenizer_model_max_length")
  tokens: TokenIds = TokenIds()

  HF_HEADER = {"model_type": "llava_llada", "architectures": ["LlavaLLaDAModelLM"]}
  # Upstream's settings this project has no alternative to (SigLIP towers always give patch
  # features), written after the fields; the first one, in upstream's key order, after the layer.
  HF_SELECT_FEATURE = {"mm_vision_select_feature": "patch"}
  HF_CONSTANTS = {"tokenizer_padding_side": "right", "use_mm_proj": True, "mm_use_im_start_end": False,
                  "mm_use_im_patch_token": False}

  def __post_init__(self):
    if self.projector.in_features != self.vision.hidden_size:
      raise ValueError(f"projector in_features {self.projector.in_features} != vision hidden_size "
                       f"{self.vision.hidden_size}")
    if self.projector.out_features != self.text.hidden_size:
      raise ValueError(f"projector out_features {self.projector.out_features} != text hidden_size "
                       f"{self.text.hidden_size}")
    depth = self.vision_feature_depth
    if not 0 <= depth <= self.vision.num_hidden_layers:
      raise ValueError(f"mm_vision_select_layer {self.vision_select_layer} is out of range for a "
                       f"{self.vision.num_hidden_layers}-layer vision tower")
    ratio = self.image_aspect_ratio
    if not (ratio in ("anyres", "pad", "square") or re.fullmatch(r"anyres_max_\d+", ratio)):
      raise ValueError(f"image_aspect_ratio {ratio!r} is not supported; choices: {ASPECT_RATIO_MODES}")
    if self.patch_merge_type not in PATCH_MERGE_TYPES:
      raise ValueError(f"mm_patch_merge_type {self.patch_merge_type!r} is not supported; "
                       f"choices: {PATCH_MERGE_TYPES}")
    if self.newline_position not in NEWLINE_POSITIONS:
      raise ValueError(f"mm_newline_position {self.newline_position!r} is not supported; "
                       f"choices: {NEWLINE_POSITIONS}")
    if self.spatial_pool_mode not in SPATIAL_POOL_MODES:
      raise ValueError(f"mm_spatial_pool_mode {self.spatial_pool_mode!r} is not supported; "
                       f"choices: {SPATIAL_POOL_MODES} ('max' is not a linear map of the features)")
    for name, token_id in self.tokens.to_dict().items():
      if not 0 <= token_id < self.text.vocab_size:
        raise ValueError(f"special token {name} has id {token_id}, outside the vocabulary of "
                         f"{self.text.vocab_size} rows (set the config's token ids)")
    for w, h in self.image_grid_pinpoints:
      if w % self.vision.image_size or h % self.vision.image_size:
        raise ValueError(f"image_grid_pinpoints entry ({w}, {h}) is not a multiple of the crop size "
                         f"{self.vision.image_size}")

  @property
  def vision_feature_depth(self) -> int:
    """How many vision encoder layers produce the projector's input."""
    n = self.vision.num_hidden_layers
    return n + 1 + self.vision_select_layer if self.vision_select_layer < 0 else self.vision_select_layer

  @property
  def anyres_max_tiles(self) -> int | None:
    """The N of anyres_max_N: the feature budget, in crops, above which tiles are downsampled."""
    match = re.fullmatch(r"anyres_max_(\d+)", self.image_aspect_ratio)
    return int(match.group(1)) if match else None

  @property
  def is_anyres(self) -> bool:
    return self.image_aspect_ratio.startswith("anyres")

  @property
  def uses_image_newline(self) -> bool:
    return "unpad" in self.patch_merge_type

  @classmethod
  def from_hf_config(cls, d: Mapping[str, Any], vision_config: Mapping[str, Any] | None = None,
                     tokens: TokenIds | None = None) -> "LLaDAVConfig":
    """Reads a `llava_llada` config.json.

    The vision tower's dims come from `vision_config` (its config.json), else from a
    `vision_config` entry in `d`, else from the known tower named by `mm_vision_tower`. Special
    token ids come from `tokens` (e.g. read from the tokenizer), else `TokenIds.from_config_json`.
    """
    model_type = d.get("model_type")
    if model_type != cls.HF_HEADER["model_type"]:
      raise ValueError(f"expected a config with model_type {cls.HF_HEADER['model_type']!r}, got {model_type!r}")
    values = read_hf_fields(cls, d)
    if vision_config is None:
      vision_config = d.get("vision_config")
    if vision_config is not None:
      vision = SiglipConfig.from_hf_config(vision_config)
    else:
      known = [dims for key, dims in _KNOWN_VISION_TOWERS.items() if key in values["vision_tower_name"]]
      if not known:
        raise ValueError(f"mm_vision_tower {values['vision_tower_name']!r}: unknown tower; pass its config.json "
                         "as vision_config")
      vision = known[0]
    text = LLaDAConfig.from_hf_config(d)
    pinpoints = values["image_grid_pinpoints"] or default_grid_pinpoints(vision.image_size)
    return cls(**dict(values, image_grid_pinpoints=parse_grid_pinpoints(pinpoints, vision.image_size)),
               text=text, vision=vision, projector=ProjectorConfig.from_hf_config(d, out_features=text.hidden_size),
               tokens=TokenIds.from_config_json(d) if tokens is None else tokens)

  def to_hf_config(self) -> dict[str, Any]:
    fields = list(write_hf_fields(self).items())
    tower, rest = dict(fields[:2]), dict(fields[2:])
    return {**self.text.to_hf_config(), **self.projector.to_hf_config(), **self.HF_HEADER, **tower,
            **self.HF_SELECT_FEATURE, **rest, **self.HF_CONSTANTS, "vision_config": self.vision.to_hf_config(),
            TokenIds.HF_KEY: self.tokens.to_dict()}

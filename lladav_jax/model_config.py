"""Frozen configs of the three towers and of LLaDA-V, with Hugging Face `config.json` round trips.

`LLaDAVConfig.from_hf_config` reads the upstream `llava_llada` config.json; `to_hf_config` writes
one that the upstream PyTorch code loads. Only the fields the model depends on are modelled; an
exporter merges them over the source config.json to keep the rest.
"""

import dataclasses
import re
from typing import Any, Mapping

from lladav_jax.tokens import TokenIds

# Vision towers whose dims are known when a config names them without carrying their config.json.
_KNOWN_VISION_TOWERS = {
    "siglip2-so400m-patch14-384": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                       num_attention_heads=16, image_size=384, patch_size=14),
    "siglip-so400m-patch14-384": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27,
                                      num_attention_heads=16, image_size=384, patch_size=14),
}

ASPECT_RATIO_MODES = ("anyres", "anyres_max_<N>", "pad", "square")
PATCH_MERGE_TYPES = ("spatial_unpad", "flat")
NEWLINE_POSITIONS = ("grid", "frame", "one_token", "no_token")
SPATIAL_POOL_MODES = ("bilinear", "average")


def _require(d: Mapping[str, Any], key: str, expected: Any, what: str) -> None:
  value = d.get(key, expected)
  if value != expected:
    raise ValueError(f"{what}: config key {key!r} = {value!r} is not supported (expected {expected!r})")


@dataclasses.dataclass(frozen=True)
class LLaDAConfig:
  """The language tower: a LLaMA-like transformer without causal mask."""

  vocab_size: int = 126464
  hidden_size: int = 4096
  intermediate_size: int = 12288
  num_hidden_layers: int = 32
  num_attention_heads: int = 32
  num_key_value_heads: int = 32
  rope_theta: float = 500000.0
  rms_norm_eps: float = 1e-5
  max_position_embeddings: int = 16384
  initializer_range: float = 0.02
  bos_token_id: int | None = 126080
  eos_token_id: int | None = 126081
  pad_token_id: int | None = None

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                       f"{self.num_attention_heads}")
    if self.num_attention_heads % self.num_key_value_heads:
      raise ValueError(f"num_attention_heads {self.num_attention_heads} is not divisible by "
                       f"num_key_value_heads {self.num_key_value_heads}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_hf_config(cls, d: Mapping[str, Any]) -> "LLaDAConfig":
    what = "LLaDA config"
    _require(d, "hidden_act", "silu", what)
    _require(d, "attention_bias", False, what)
    _require(d, "mlp_bias", False, what)
    _require(d, "tie_word_embeddings", False, what)
    _require(d, "rope_scaling", None, what)
    return cls(
        vocab_size=int(d["vocab_size"]),
        hidden_size=int(d["hidden_size"]),
        intermediate_size=int(d["intermediate_size"]),
        num_hidden_layers=int(d["num_hidden_layers"]),
        num_attention_heads=int(d["num_attention_heads"]),
        num_key_value_heads=int(d.get("num_key_value_heads") or d["num_attention_heads"]),
        rope_theta=float(d.get("rope_theta", 10000.0)),
        rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
        max_position_embeddings=int(d.get("max_position_embeddings", 2048)),
        initializer_range=float(d.get("initializer_range", 0.02)),
        bos_token_id=d.get("bos_token_id"),
        eos_token_id=d.get("eos_token_id"),
        pad_token_id=d.get("pad_token_id"),
    )

  def to_hf_config(self) -> dict[str, Any]:
    return dict(
        model_type="llada",
        architectures=["LLaDAModelLM"],
        vocab_size=self.vocab_size,
        hidden_size=self.hidden_size,
        intermediate_size=self.intermediate_size,
        num_hidden_layers=self.num_hidden_layers,
        num_attention_heads=self.num_attention_heads,
        num_key_value_heads=self.num_key_value_heads,
        rope_theta=self.rope_theta,
        rms_norm_eps=self.rms_norm_eps,
        max_position_embeddings=self.max_position_embeddings,
        initializer_range=self.initializer_range,
        bos_token_id=self.bos_token_id,
        eos_token_id=self.eos_token_id,
        pad_token_id=self.pad_token_id,
        hidden_act="silu",
        attention_bias=False,
        attention_dropout=0.0,
        tie_word_embeddings=False,
        rope_scaling=None,
        pretraining_tp=1,
        use_cache=False,
    )


@dataclasses.dataclass(frozen=True)
class SiglipConfig:
  """The vision tower (fixed-resolution SigLIP). `num_hidden_layers` is the tower's full depth."""

  hidden_size: int = 1152
  intermediate_size: int = 4304
  num_hidden_layers: int = 27
  num_attention_heads: int = 16
  num_channels: int = 3
  image_size: int = 384
  patch_size: int = 14
  layer_norm_eps: float = 1e-6

  def __post_init__(self):
    if self.hidden_size % self.num_attention_heads:
      raise ValueError(f"vision hidden_size {self.hidden_size} is not divisible by num_attention_heads "
                       f"{self.num_attention_heads}")

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
    _require(d, "hidden_act", "gelu_pytorch_tanh", "SigLIP vision config")
    defaults = cls()
    return cls(
        hidden_size=int(d.get("hidden_size", defaults.hidden_size)),
        intermediate_size=int(d.get("intermediate_size", defaults.intermediate_size)),
        num_hidden_layers=int(d.get("num_hidden_layers", defaults.num_hidden_layers)),
        num_attention_heads=int(d.get("num_attention_heads", defaults.num_attention_heads)),
        num_channels=int(d.get("num_channels", defaults.num_channels)),
        image_size=int(d.get("image_size", defaults.image_size)),
        patch_size=int(d.get("patch_size", defaults.patch_size)),
        layer_norm_eps=float(d.get("layer_norm_eps", defaults.layer_norm_eps)),
    )

  def to_hf_config(self) -> dict[str, Any]:
    return dict(
        model_type="siglip_vision_model",
        hidden_size=self.hidden_size,
        intermediate_size=self.intermediate_size,
        num_hidden_layers=self.num_hidden_layers,
        num_attention_heads=self.num_attention_heads,
        num_channels=self.num_channels,
        image_size=self.image_size,
        patch_size=self.patch_size,
        layer_norm_eps=self.layer_norm_eps,
        hidden_act="gelu_pytorch_tanh",
        attention_dropout=0.0,
    )


@dataclasses.dataclass(frozen=True)
class ProjectorConfig:
  """The multimodal projector: `linear` or `mlp<N>x_gelu` (Linear, then (GELU, Linear) N-1 times)."""

  projector_type: str = "mlp2x_gelu"
  in_features: int = 1152
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
    return cls(projector_type=d.get("mm_projector_type", "linear"),
               in_features=int(d["mm_hidden_size"]), out_features=out_features)

  def to_hf_config(self) -> dict[str, Any]:
    return dict(mm_projector_type=self.projector_type, mm_hidden_size=self.in_features)


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


@dataclasses.dataclass(frozen=True)
class LLaDAVConfig:
  """LLaDA-V: vision tower -> projector -> features spliced into the language tower's input."""

  text: LLaDAConfig = LLaDAConfig()
  vision: SiglipConfig = SiglipConfig()
  projector: ProjectorConfig = ProjectorConfig()
  # Hidden-state index of the vision tower fed to the projector, HF convention: -2 is the output of
  # the penultimate layer, un-normalised (what upstream computes by deleting the last layer).
  vision_select_layer: int = -2
  vision_tower_name: str = "google/siglip2-so400m-patch14-384"
  image_aspect_ratio: str = "anyres_max_4"
  image_grid_pinpoints: tuple[tuple[int, int], ...] = default_grid_pinpoints()
  patch_merge_type: str = "spatial_unpad"
  # Video: where image-newline tokens go, and how frames are pooled 2x2.
  newline_position: str = "grid"
  spatial_pool_mode: str = "bilinear"
  # Maximum length of the spliced sequence (upstream's tokenizer_model_max_length).
  max_length: int | None = None
  tokens: TokenIds = TokenIds()

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
    if model_type != "llava_llada":
      raise ValueError(f"expected a config with model_type 'llava_llada', got {model_type!r}")
    tower_name = d.get("mm_vision_tower", cls.vision_tower_name)
    if vision_config is None:
      vision_config = d.get("vision_config")
    if vision_config is not None:
      vision = SiglipConfig.from_hf_config(vision_config)
    else:
      known = [dims for key, dims in _KNOWN_VISION_TOWERS.items() if key in str(tower_name)]
      if not known:
        raise ValueError(f"mm_vision_tower {tower_name!r}: unknown tower; pass its config.json "
                         "as vision_config")
      vision = SiglipConfig(**known[0])
    text = LLaDAConfig.from_hf_config(d)
    return cls(
        text=text,
        vision=vision,
        projector=ProjectorConfig.from_hf_config(d, out_features=text.hidden_size),
        vision_select_layer=int(d.get("mm_vision_select_layer", -2)),
        vision_tower_name=str(tower_name),
        image_aspect_ratio=d.get("image_aspect_ratio", "square"),
        image_grid_pinpoints=parse_grid_pinpoints(
            d.get("image_grid_pinpoints") or default_grid_pinpoints(vision.image_size),
            vision.image_size),
        patch_merge_type=d.get("mm_patch_merge_type", "flat"),
        newline_position=d.get("mm_newline_position", "one_token"),
        spatial_pool_mode=d.get("mm_spatial_pool_mode", "bilinear"),
        max_length=d.get("tokenizer_model_max_length"),
        tokens=TokenIds.from_config_json(d) if tokens is None else tokens,
    )

  def to_hf_config(self) -> dict[str, Any]:
    d = self.text.to_hf_config()
    d.update(self.projector.to_hf_config())
    d.update(
        model_type="llava_llada",
        architectures=["LlavaLLaDAModelLM"],
        mm_vision_tower=self.vision_tower_name,
        mm_vision_select_layer=self.vision_select_layer,
        mm_vision_select_feature="patch",
        image_aspect_ratio=self.image_aspect_ratio,
        image_grid_pinpoints=[list(p) for p in self.image_grid_pinpoints],
        mm_patch_merge_type=self.patch_merge_type,
        mm_newline_position=self.newline_position,
        mm_spatial_pool_mode=self.spatial_pool_mode,
        tokenizer_model_max_length=self.max_length,
        tokenizer_padding_side="right",
        use_mm_proj=True,
        mm_use_im_start_end=False,
        mm_use_im_patch_token=False,
        vision_config=self.vision.to_hf_config(),
    )
    d[TokenIds.HF_KEY] = self.tokens.to_dict()
    return d


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
  """How the modules compute, independent of the checkpoint: dtypes, layer scan, remat, attention."""

  dtype: str = "float32"  # activations
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"
  attention_impl: str = "xla"

  REMAT_POLICIES = ("none", "full", "minimal", "save_attention")
  ATTENTION_IMPLS = ("xla", "cudnn")
  DTYPES = ("float32", "bfloat16", "float16")

  def __post_init__(self):
    for name, value, choices in (("dtype", self.dtype, self.DTYPES),
                                 ("param_dtype", self.param_dtype, self.DTYPES),
                                 ("remat_policy", self.remat_policy, self.REMAT_POLICIES),
                                 ("attention_impl", self.attention_impl, self.ATTENTION_IMPLS)):
      if value not in choices:
        raise ValueError(f"compute.{name} = {value!r}; choices: {choices}")

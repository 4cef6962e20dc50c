"""The SigLIP vision tower (fixed resolution): patch conv, learned positions, pre-LN encoder.

Parameter names follow Hugging Face's `SiglipVisionModel` (`embeddings.patch_embedding`,
`encoder.layers.N.self_attn.q_proj`, `mlp.fc1`, `post_layernorm`). The pooling head is not built:
LLaDA-V never uses it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lladav_jax import sharding as S
from lladav_jax.models import layers as L
from lladav_jax.model_config import ComputeConfig, SiglipConfig

_TOKENS = (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_EMBED)
# SigLIP's own init for attention and MLP weights (transformers' SiglipPreTrainedModel), so that a
# tower trained from scratch starts at a sensible scale.
_XAVIER = nn.initializers.xavier_uniform()


class SiglipEmbeddings(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, pixel_values: jax.Array) -> jax.Array:
    """pixel_values: [N, H, W, C] in [-1, 1] -> [N, num_patches, D]."""
    cfg, dtype, pdt = self.config, L.dtype_of(self.compute.dtype), L.dtype_of(self.compute.param_dtype)
    patches = nn.Conv(
        cfg.hidden_size, kernel_size=(cfg.patch_size, cfg.patch_size),
        strides=(cfg.patch_size, cfg.patch_size), padding="VALID", dtype=dtype, param_dtype=pdt,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 (None, None, None, S.EMBED)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (S.EMBED,)),
        name="patch_embedding")(pixel_values.astype(dtype))
    n = patches.shape[0]
    patches = patches.reshape(n, -1, cfg.hidden_size)  # row-major over the patch grid
    if patches.shape[1] != cfg.num_patches:
      raise ValueError(f"pixel_values {pixel_values.shape} give {patches.shape[1]} patches; the vision "
                       f"tower expects {cfg.image_size}x{cfg.image_size} crops ({cfg.num_patches} patches)")
    positions = self.param(
        "position_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(0.02), (S.POSITIONS, S.EMBED)),
        (cfg.num_patches, cfg.hidden_size), pdt)
    return patches + jnp.asarray(positions, dtype)[None]


class SiglipAttention(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dtype, pdt = self.config, L.dtype_of(self.compute.dtype), L.dtype_of(self.compute.param_dtype)
    n, length, width = x.shape
    heads = cfg.num_attention_heads
    kw = dict(use_bias=True, dtype=dtype, param_dtype=pdt, kernel_init=_XAVIER)
    split = lambda t: L.constrain(t.reshape(n, length, heads, width // heads),
                                  (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_HEADS, S.ACT_KV))
    q = split(L.dense(width, (S.EMBED, S.HEADS), name="q_proj", **kw)(x))
    k = split(L.dense(width, (S.EMBED, S.HEADS), name="k_proj", **kw)(x))
    v = split(L.dense(width, (S.EMBED, S.HEADS), name="v_proj", **kw)(x))
    out = L.attention(q, k, v, None, self.compute.attention_impl).reshape(n, length, width)
    return L.dense(width, (S.HEADS, S.EMBED), name="out_proj", **kw)(out)


class SiglipMLP(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dtype, pdt = self.config, L.dtype_of(self.compute.dtype), L.dtype_of(self.compute.param_dtype)
    kw = dict(use_bias=True, dtype=dtype, param_dtype=pdt, kernel_init=_XAVIER)
    h = L.dense(cfg.intermediate_size, (S.EMBED, S.MLP), name="fc1", **kw)(x)
    h = L.constrain(nn.gelu(h, approximate=True), (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_MLP))
    return L.dense(cfg.hidden_size, (S.MLP, S.EMBED), name="fc2", **kw)(h)


class SiglipEncoderLayer(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array):
    cfg, dtype, pdt = self.config, L.dtype_of(self.compute.dtype), L.dtype_of(self.compute.param_dtype)
    norm = dict(dtype=dtype, param_dtype=pdt)
    x = x + SiglipAttention(cfg, self.compute, name="self_attn")(
        L.layer_norm(cfg.layer_norm_eps, name="layer_norm1", **norm)(x))
    x = x + SiglipMLP(cfg, self.compute, name="mlp")(
        L.layer_norm(cfg.layer_norm_eps, name="layer_norm2", **norm)(x))
    x = L.constrain(x, _TOKENS)
    return x, x


class SiglipEncoder(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig
  num_layers: int
  collect_hidden_states: bool

  @nn.compact
  def __call__(self, x: jax.Array):
    run = L.stack_layers(SiglipEncoderLayer, num_layers=self.num_layers, scan=self.compute.scan_layers,
                         remat_policy=self.compute.remat_policy, broadcast_args=0, name="layers",
                         collect_outputs=self.collect_hidden_states,
                         config=self.config, compute=self.compute)
    return run(x)


class SiglipVisionTower(nn.Module):
  """Runs the first `num_layers` encoder layers (default: all) on a batch of crops.

  Returns a dict:
    last_hidden_state: [N, T, D], output of the last layer run, not normalised (what LLaDA-V uses);
    post_layernorm:    [N, T, D], the same after post_layernorm (SigLIP's own output);
    hidden_states:     [num_layers + 1, N, T, D], embeddings then each layer's output, HF order
                       (only with `collect_hidden_states`).
  """

  config: SiglipConfig
  compute: ComputeConfig
  num_layers: int | None = None
  collect_hidden_states: bool = False

  @nn.compact
  def __call__(self, pixel_values: jax.Array) -> dict[str, jax.Array]:
    cfg = self.config
    num_layers = cfg.num_hidden_layers if self.num_layers is None else self.num_layers
    x = L.constrain(SiglipEmbeddings(cfg, self.compute, name="embeddings")(pixel_values), _TOKENS)
    last, per_layer = SiglipEncoder(cfg, self.compute, num_layers, self.collect_hidden_states,
                                    name="encoder")(x)
    post = L.layer_norm(cfg.layer_norm_eps, name="post_layernorm", dtype=L.dtype_of(self.compute.dtype),
                        param_dtype=L.dtype_of(self.compute.param_dtype))(last)
    out = {"last_hidden_state": last, "post_layernorm": post}
    if self.collect_hidden_states:
      out["hidden_states"] = x[None] if per_layer is None else jnp.concatenate([x[None], per_layer])
    return out

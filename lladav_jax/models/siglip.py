"""The SigLIP vision tower (fixed resolution): patch conv, learned positions, pre-LN encoder.

Parameter names follow Hugging Face's `SiglipVisionModel` (`embeddings.patch_embedding`,
`encoder.layers.N.self_attn.q_proj`, `mlp.fc1`, `post_layernorm`). The pooling head is not built:
LLaDA-V never uses it.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from lladav_jax import sharding
from lladav_jax.model_config import SiglipConfig
from lladav_jax.models import layers
from lladav_jax.models.attention import dot_product_attention
from lladav_jax.models.compute import ComputeConfig

_TOKENS = (sharding.ACT_BATCH, sharding.ACT_LENGTH, sharding.ACT_EMBED)
# SigLIP's own init for attention and MLP weights (transformers' SiglipPreTrainedModel), so that a
# tower trained from scratch starts at a sensible scale.
_XAVIER = nn.initializers.xavier_uniform()


class SiglipEmbeddings(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, pixel_values: jax.Array) -> jax.Array:
    """pixel_values: [N, H, W, C] in [-1, 1] -> [N, num_patches, D]."""
    cfg, dtype, pdt = self.config, self.compute.activation_dtype, self.compute.weight_dtype
    patches = nn.Conv(
        cfg.hidden_size, kernel_size=(cfg.patch_size, cfg.patch_size),
        strides=(cfg.patch_size, cfg.patch_size), padding="VALID", dtype=dtype, param_dtype=pdt,
        kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(),
                                                 (None, None, None, sharding.EMBED)),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (sharding.EMBED,)),
        name="patch_embedding")(pixel_values.astype(dtype))
    n = patches.shape[0]
    patches = patches.reshape(n, -1, cfg.hidden_size)  # row-major over the patch grid
    if patches.shape[1] != cfg.num_patches:
      raise ValueError(f"pixel_values {pixel_values.shape} give {patches.shape[1]} patches; the vision "
                       f"tower expects {cfg.image_size}x{cfg.image_size} crops ({cfg.num_patches} patches)")
    positions = self.param(
        "position_embedding",
        nn.with_logical_partitioning(nn.initializers.normal(0.02), (sharding.POSITIONS, sharding.EMBED)),
        (cfg.num_patches, cfg.hidden_size), pdt)
    return patches + jnp.asarray(positions, dtype)[None]


class SiglipAttention(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dtype, pdt = self.config, self.compute.activation_dtype, self.compute.weight_dtype
    n, length, width = x.shape
    heads = cfg.num_attention_heads
    kw = dict(use_bias=True, dtype=dtype, param_dtype=pdt, kernel_init=_XAVIER, lora=self.compute.lora,
              tower="vision")
    split = lambda t: layers.constrain(t.reshape(n, length, heads, width // heads),
                                  (sharding.ACT_BATCH, sharding.ACT_LENGTH, sharding.ACT_HEADS, sharding.ACT_KV))
    q = split(layers.dense(width, (sharding.EMBED, sharding.HEADS), name="q_proj", **kw)(x))
    k = split(layers.dense(width, (sharding.EMBED, sharding.HEADS), name="k_proj", **kw)(x))
    v = split(layers.dense(width, (sharding.EMBED, sharding.HEADS), name="v_proj", **kw)(x))
    out = dot_product_attention(q, k, v, None, self.compute.attention_impl).reshape(n, length, width)
    return layers.dense(width, (sharding.HEADS, sharding.EMBED), name="out_proj", **kw)(out)


class SiglipMLP(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dtype, pdt = self.config, self.compute.activation_dtype, self.compute.weight_dtype
    kw = dict(use_bias=True, dtype=dtype, param_dtype=pdt, kernel_init=_XAVIER, lora=self.compute.lora,
              tower="vision")
    h = layers.dense(cfg.intermediate_size, (sharding.EMBED, sharding.MLP), name="fc1", **kw)(x)
    h = layers.constrain(nn.gelu(h, approximate=True), (sharding.ACT_BATCH, sharding.ACT_LENGTH, sharding.ACT_MLP))
    return layers.dense(cfg.hidden_size, (sharding.MLP, sharding.EMBED), name="fc2", **kw)(h)


class SiglipEncoderLayer(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array):
    cfg, dtype, pdt = self.config, self.compute.activation_dtype, self.compute.weight_dtype
    norm = dict(dtype=dtype, param_dtype=pdt)
    x = x + SiglipAttention(cfg, self.compute, name="self_attn")(
        layers.layer_norm(cfg.layer_norm_eps, name="layer_norm1", **norm)(x))
    x = x + SiglipMLP(cfg, self.compute, name="mlp")(
        layers.layer_norm(cfg.layer_norm_eps, name="layer_norm2", **norm)(x))
    x = layers.constrain(x, _TOKENS)
    return x, x


class SiglipEncoder(nn.Module):
  config: SiglipConfig
  compute: ComputeConfig
  num_layers: int
  collect_hidden_states: bool

  @nn.compact
  def __call__(self, x: jax.Array):
    run = layers.stack_layers(SiglipEncoderLayer, num_layers=self.num_layers, scan=self.compute.scan_layers,
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
    x = layers.constrain(SiglipEmbeddings(cfg, self.compute, name="embeddings")(pixel_values), _TOKENS)
    last, per_layer = SiglipEncoder(cfg, self.compute, num_layers, self.collect_hidden_states,
                                    name="encoder")(x)
    post = layers.layer_norm(cfg.layer_norm_eps, name="post_layernorm", dtype=self.compute.activation_dtype,
                        param_dtype=self.compute.weight_dtype)(last)
    out = {"last_hidden_state": last, "post_layernorm": post}
    if self.collect_hidden_states:
      out["hidden_states"] = x[None] if per_layer is None else jnp.concatenate([x[None], per_layer])
    return out

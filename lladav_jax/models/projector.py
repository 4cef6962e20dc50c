"""The multimodal projector: vision width -> language width (`mlp2x_gelu` = Linear, GELU, Linear)."""

import flax.linen as nn
import jax

from lladav_jax import sharding as S
from lladav_jax.models import layers as L
from lladav_jax.model_config import ComputeConfig, ProjectorConfig


class Projector(nn.Module):
  """Layers are `linear_1`..`linear_N` (HF `mm_projector.0`, `.2`, ...); GELU is the exact erf form.
  A random init is torch.nn.Linear's default, as upstream's freshly built projector."""

  config: ProjectorConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dtype, pdt = self.config, L.dtype_of(self.compute.dtype), L.dtype_of(self.compute.param_dtype)
    kw = dict(use_bias=True, dtype=dtype, param_dtype=pdt, kernel_init=L.TORCH_LINEAR_KERNEL_INIT)
    # Megatron-style: the first layer splits its outputs, the next ones their inputs.
    first_out = S.MLP if cfg.depth > 1 else S.EMBED
    x = L.dense(cfg.out_features, (S.EMBED_VISION, first_out), name="linear_1",
                bias_init=L.torch_linear_bias_init(cfg.in_features), **kw)(x)
    for i in range(2, cfg.depth + 1):
      x = nn.gelu(x, approximate=False)
      x = L.dense(cfg.out_features, (S.MLP, S.EMBED), name=f"linear_{i}",
                  bias_init=L.torch_linear_bias_init(cfg.out_features), **kw)(x)
    return L.constrain(x, (S.ACT_BATCH, S.ACT_LENGTH, S.ACT_EMBED))

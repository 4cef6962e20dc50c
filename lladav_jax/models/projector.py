"""The multimodal projector: vision width -> language width (`mlp2x_gelu` = Linear, GELU, Linear)."""

import flax.linen as nn
import jax

from lladav_jax import sharding
from lladav_jax.model_config import ProjectorConfig
from lladav_jax.models import layers
from lladav_jax.models.compute import ComputeConfig


class Projector(nn.Module):
  """Layers are `linear_1`..`linear_N` (HF `mm_projector.0`, `.2`, ...); GELU is the exact erf form.
  A random init is torch.nn.Linear's default, as upstream's freshly built projector."""

  config: ProjectorConfig
  compute: ComputeConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    cfg, dtype, pdt = self.config, self.compute.activation_dtype, self.compute.weight_dtype
    kw = dict(use_bias=True, dtype=dtype, param_dtype=pdt, kernel_init=layers.TORCH_LINEAR_KERNEL_INIT,
              lora=self.compute.lora, tower="projector")
    # Megatron-style: the first layer splits its outputs, the next ones their inputs.
    first_out = sharding.MLP if cfg.depth > 1 else sharding.EMBED
    x = layers.dense(cfg.out_features, (sharding.EMBED_VISION, first_out), name="linear_1",
                bias_init=layers.torch_linear_bias_init(cfg.in_features), **kw)(x)
    for i in range(2, cfg.depth + 1):
      x = nn.gelu(x, approximate=False)
      x = layers.dense(cfg.out_features, (sharding.MLP, sharding.EMBED), name=f"linear_{i}",
                  bias_init=layers.torch_linear_bias_init(cfg.out_features), **kw)(x)
    return layers.constrain(x, (sharding.ACT_BATCH, sharding.ACT_LENGTH, sharding.ACT_EMBED))

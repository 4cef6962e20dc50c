"""The real 8B configuration instantiates abstractly, with the parameter counts its dims imply."""

import flax.linen as nn
import jax
import numpy as np

from configs import base
from lladav_jax import run_config
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import abstract_inputs


def _count(tree) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(tree)))


def test_eight_billion_config_param_counts_per_tower():
  config = run_config.model_config(base.get_config())
  compute = run_config.compute_config(base.get_config())
  model = LLaDAV(config, compute)
  shapes = jax.eval_shape(model.init, jax.random.key(0), **abstract_inputs(config, 1, 64, 1))
  params = nn.unbox(shapes)["params"]
  # Every parameter carries logical axis names, one per dimension.
  boxed = jax.tree_util.tree_leaves(shapes, is_leaf=lambda x: isinstance(x, nn.Partitioned))
  assert all(isinstance(leaf, nn.Partitioned) for leaf in boxed)
  assert all(len(leaf.names) == leaf.value.ndim for leaf in boxed)

  # Figures from the published dims, written out independently of the modules.
  vocab, width, inter, layers, heads, kv_heads, head_dim = 126464, 4096, 12288, 32, 32, 32, 128
  text = (2 * vocab * width + width
          + layers * (width * heads * head_dim * 2 + 2 * width * kv_heads * head_dim + 3 * width * inter + 2 * width))
  v_width, v_inter, v_layers, patch, positions = 1152, 4304, 26, 14, 729  # 27 layers, last one unused
  vision = (patch * patch * 3 * v_width + v_width + positions * v_width + 2 * v_width
            + v_layers * (4 * (v_width * v_width + v_width) + 2 * v_width * v_inter + v_inter + v_width
                          + 4 * v_width))
  projector = v_width * width + width + width * width + width

  assert _count(params["language_model"]) == text == 8_015_581_184
  assert _count(params["vision_tower"]) == vision
  assert _count(params["mm_projector"]) == projector
  assert params["image_newline"].shape == (width,)
  assert params["language_model"]["layers"]["self_attn"]["q_proj"]["kernel"].shape == (32, 4096, 4096)
  assert params["vision_tower"]["encoder"]["layers"]["mlp"]["fc1"]["kernel"].shape == (26, 1152, 4304)
  # Parameters default to float32 master copies; activations in bf16.
  assert params["language_model"]["embed_tokens"]["embedding"].dtype == np.float32

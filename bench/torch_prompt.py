"""A prompt's encoding with one square image, re-stated in torch for bench/forward.py: transformers'
SigLIP (the tower truncated to the feature depth, no pooling head; the last of its hidden states,
before the post-LN: the full tower's penultimate layer, as upstream takes it), the mlp<N>x_gelu projector as
upstream's nn.Sequential, the anyres packing of a 384x384 image (the base crop's 729 features, then
the one grid crop's 27 rows of 27 each followed by the image newline: 1485 tokens) and the splice
of those features at the image placeholder of the token embeddings.
"""

import numpy as np
import torch
from transformers import SiglipVisionConfig, SiglipVisionModel

from lladav_jax.convert import key_map
from lladav_jax.models import LLaDAV
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID


def _torch_state(tree, entries, strip: str = "") -> dict[str, torch.Tensor]:
  return {key[len(strip):]: torch.from_numpy(np.array(value, np.float32))
          for key, value in key_map.params_to_hf(tree, entries)}


class TorchPromptEncoder:
  """`model`'s vision tower, projector and image newline (from `params`, scanned layers) in torch."""

  def __init__(self, model: LLaDAV, params):
    config, tree = model.config, params["params"]
    vision, depth = config.vision, config.vision_feature_depth
    self.siglip = SiglipVisionModel(SiglipVisionConfig(
        hidden_size=vision.hidden_size, intermediate_size=vision.intermediate_size, num_hidden_layers=depth,
        num_attention_heads=vision.num_attention_heads, image_size=vision.image_size,
        patch_size=vision.patch_size, layer_norm_eps=vision.layer_norm_eps, hidden_act="gelu_pytorch_tanh",
        vision_use_head=False)).eval()
    prefix = "vision_model."  # the checkpoint's prefix; this transformers' module has none
    self.siglip.load_state_dict(_torch_state(
        tree["vision_tower"], key_map.siglip_entries(vision, num_layers=depth, scan=model.compute.scan_layers,
                                                     hf_prefix=prefix), strip=prefix))
    linears = []
    for _ in range(config.projector.depth):
      width_in = config.projector.in_features if not linears else config.projector.out_features
      linears.append(torch.nn.Linear(width_in, config.projector.out_features))
    modules = [linears[0]]
    for linear in linears[1:]:
      modules += [torch.nn.GELU(), linear]
    self.projector = torch.nn.Sequential(*modules).eval()
    prefix = "model.mm_projector."
    self.projector.load_state_dict(_torch_state(tree, key_map.projector_entries(config.projector, hf_prefix=prefix),
                                                strip=prefix))
    self.newline = torch.from_numpy(np.array(tree["image_newline"], np.float32))
    self.side = vision.patches_per_side

  @torch.no_grad()
  def __call__(self, embed: torch.nn.Embedding, token_ids: list[int], crops: np.ndarray) -> torch.Tensor:
    """token_ids with one IMAGE_PLACEHOLDER_ID; crops float32 [2, S, S, 3] (the base crop, the grid
    crop) -> the spliced prompt embeddings [1, P, D]."""
    pixels = torch.from_numpy(np.ascontiguousarray(crops, np.float32)).permute(0, 3, 1, 2)
    hidden = self.siglip(pixel_values=pixels, output_hidden_states=True).hidden_states[-1]
    features = self.projector(hidden)  # [2, side^2, D]
    side, width = self.side, features.shape[-1]
    grid = features[1].view(side, side, width)
    rows = torch.cat([grid, self.newline.expand(side, 1, width)], dim=1).reshape(-1, width)
    image = torch.cat([features[0], rows])
    at = token_ids.index(IMAGE_PLACEHOLDER_ID)
    before = embed(torch.tensor(token_ids[:at], dtype=torch.long))
    after = embed(torch.tensor(token_ids[at + 1:], dtype=torch.long))
    return torch.cat([before, image, after])[None]

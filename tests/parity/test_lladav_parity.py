"""LLaDA-V end to end against a reference assembled only from transformers/torch pieces.

Reference per sample, as upstream computes it: transformers' OneVision processor makes the crops,
SiglipVisionModel's penultimate hidden state (un-normalised) goes through the torch projector,
transformers' `pack_image_features` packs it with the newline vector, the features replace each
placeholder in the token embeddings, and transformers' Llama runs with a full attention mask.
Ours: the same weights converted, samples batched with padding, one jitted call.
"""

import types

import jax
import numpy as np
import pytest
import torch
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil)
from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel

from lladav_jax.convert import key_map
from lladav_jax.images.crops import sample_visuals
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import build_sample, collate, model_inputs
from lladav_jax.tokens import IMAGE_PLACEHOLDER_ID
from tests import tiny

CONFIG = tiny.LLADAV
HF_PINPOINTS = [[h, w] for (w, h) in CONFIG.image_grid_pinpoints]
# float32 through two towers and a bilinear resize whose torch weights differ by ~1e-5 (see
# test_image_parity); logits are O(1).
ATOL = 5e-5


class Reference:
  """Upstream's computation, from transformers/torch parts only."""

  def __init__(self):
    self.llama = tiny.hf_llama(CONFIG.text, seed=1)
    self.siglip = tiny.hf_siglip(CONFIG.vision, seed=2)
    self.projector = tiny.hf_projector(CONFIG.projector, seed=3)
    torch.manual_seed(4)
    self.newline = torch.randn(CONFIG.text.hidden_size)
    self.processor = LlavaOnevisionImageProcessorPil(
        image_mean=[0.5] * 3, image_std=[0.5] * 3, image_grid_pinpoints=HF_PINPOINTS,
        size={"height": 384, "width": 384})
    vision = types.SimpleNamespace(image_size=384, patch_size=14)
    self.stub = types.SimpleNamespace(config=types.SimpleNamespace(vision_config=vision,
                                                                   image_grid_pinpoints=HF_PINPOINTS))

  def checkpoint(self) -> dict[str, np.ndarray]:
    """The state dict in the published LLaDA-V layout (vision tower with its last layer deleted)."""
    state = tiny.state_dict_numpy(self.llama)
    last = CONFIG.vision.num_hidden_layers - 1
    state.update({key_map.LLADAV_VISION_PREFIX + k: v for k, v in tiny.state_dict_numpy(self.siglip).items()
                  if not k.startswith(f"encoder.layers.{last}.") and not k.startswith("head.")})
    state.update(tiny.state_dict_numpy(self.projector, "model.mm_projector."))
    state["model.image_newline"] = self.newline.numpy()
    return state

  @torch.no_grad()
  def image_features(self, images):
    pixels = self.processor(images=[images], return_tensors="pt")["pixel_values"]
    pixels = pixels[:, 0] if len(images) > 1 else pixels[0]  # one crop per image, or all crops of one
    hidden = self.siglip(pixel_values=pixels, output_hidden_states=True).hidden_states[-2]
    projected = self.projector(hidden)
    if len(images) > 1:  # several images: one crop each, packed one by one
      per_image = [projected[i:i + 1] for i in range(len(images))]
      sizes = torch.tensor([[im.height, im.width] for im in images])
    else:
      per_image, sizes = [projected], torch.tensor([[images[0].height, images[0].width]])
    packed, _ = LlavaOnevisionModel.pack_image_features(self.stub, per_image, sizes, image_newline=self.newline,
                                                        vision_aspect_ratio=CONFIG.image_aspect_ratio)
    return packed

  @torch.no_grad()
  def logits(self, token_ids, images):
    embed = self.llama.get_input_embeddings()
    features = iter(self.image_features(images)) if images else iter(())
    pieces, text = [], []
    for t in token_ids:
      if t == IMAGE_PLACEHOLDER_ID:
        pieces += [embed(torch.tensor(text, dtype=torch.long)), next(features)]
        text = []
      else:
        text.append(t)
    pieces.append(embed(torch.tensor(text, dtype=torch.long)))
    embeds = torch.cat(pieces)[None]
    full = torch.ones(1, 1, embeds.shape[1], embeds.shape[1], dtype=torch.bool)
    return self.llama(inputs_embeds=embeds, attention_mask=full).logits[0].numpy()


@pytest.fixture(scope="module")
def reference():
  return Reference()


SAMPLES = [
    ("one wide image", [5, 6, IMAGE_PLACEHOLDER_ID, 7, 8, 9], [(640, 360)]),
    ("two images", [3, IMAGE_PLACEHOLDER_ID, 4, IMAGE_PLACEHOLDER_ID, 5], [(500, 300), (200, 400)]),
    ("text only", [10, 11, 12, 13], []),
    ("tall image first", [IMAGE_PLACEHOLDER_ID, 20, 21], [(300, 900)]),
]


@pytest.mark.parametrize("scan", [True, False], ids=["scan", "loop"])
def test_batched_logits_match_per_sample_reference(reference, scan):
  compute = tiny.F32 if scan else tiny.F32_LOOP
  params = key_map.params_from_hf(reference.checkpoint().__getitem__, key_map.lladav_entries(CONFIG, scan=scan))
  samples, expected = [], []
  for name, ids, sizes in SAMPLES:
    images = [tiny.random_image(w, h, seed=w + h) for w, h in sizes]
    samples.append(build_sample(ids, sample_visuals(images, CONFIG), CONFIG, sample_id=name))
    expected.append(reference.logits(ids, images))
  seq_len = max(s.length for s in samples) + 7  # padding in every row
  max_crops = max(s.num_crops for s in samples) + 1  # and a padded crop
  batch = collate([[s] for s in samples], seq_len, max_crops, CONFIG)
  model = LLaDAV(CONFIG, compute)
  logits = np.asarray(jax.jit(model.apply)({"params": params}, **model_inputs(batch)))
  for row, ((name, _, _), sample, want) in enumerate(zip(SAMPLES, samples, expected)):
    assert sample.length == want.shape[0], name
    np.testing.assert_allclose(logits[row, :sample.length], want, atol=ATOL, rtol=1e-4, err_msg=name)

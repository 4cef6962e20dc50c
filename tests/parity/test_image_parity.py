"""Image crops, token counts and packed features against transformers' LLaVA-OneVision.

transformers' pinpoints are (height, width); we pass upstream's (width, height) list swapped and in
upstream's order, so both walk the candidates identically.
"""

import types

import numpy as np
import pytest
import torch
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
    LlavaOnevisionImageProcessorPil)
from transformers.models.llava_onevision.modeling_llava_onevision import LlavaOnevisionModel
from transformers.models.llava_onevision.processing_llava_onevision import LlavaOnevisionProcessor

from lladav_jax.images.crops import sample_visuals, video_visual
from lladav_jax.images.feature_layout import NEWLINE, visual_layout
from tests import tiny

CONFIG = tiny.LLADAV
HF_PINPOINTS = [[h, w] for (w, h) in CONFIG.image_grid_pinpoints]
# Square, wide, tall, extreme (5:1 both ways), tiny, large, odd sizes.
SIZES = [(384, 384), (640, 360), (1000, 200), (200, 1000), (500, 300), (30, 20), (2000, 1500),
         (1023, 767), (4000, 300), (777, 1999)]
# torch's bilinear resize may fuse multiply-adds on float32 source coordinates, so interpolation
# weights can differ by ~1 ulp of a coordinate near 100 (~1e-5); features are O(1).
RESIZE_ATOL = 3e-5


def _hf_processor():
  return LlavaOnevisionImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3,
                                         image_grid_pinpoints=HF_PINPOINTS,
                                         size={"height": 384, "width": 384})


def _hf_token_count(width: int, height: int) -> int:
  processor = LlavaOnevisionProcessor.__new__(LlavaOnevisionProcessor)
  processor.image_processor = _hf_processor()
  processor.num_image_tokens = CONFIG.vision.num_patches
  processor.vision_aspect_ratio = CONFIG.image_aspect_ratio
  return processor._get_number_of_features(height, width, 384, 384)


def _hf_model_stub():
  """What LlavaOnevisionModel.pack_image_features reads from `self`."""
  vision = types.SimpleNamespace(image_size=CONFIG.vision.image_size, patch_size=CONFIG.vision.patch_size)
  return types.SimpleNamespace(config=types.SimpleNamespace(vision_config=vision,
                                                            image_grid_pinpoints=HF_PINPOINTS))


def _gather(layout, features, newline):
  """Applies a layout with NumPy: features [C*T, D], newline [D]."""
  table = np.concatenate([features, newline[None]])
  index = np.where(layout.index == NEWLINE, table.shape[0] - 1, layout.index)
  return np.einsum("tk,tkd->td", layout.weight, table[index])


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_crops_match_transformers_processor(size):
  image = tiny.random_image(*size, seed=size[0])
  ours = sample_visuals([image], CONFIG)[0]
  theirs = _hf_processor()(images=[image], return_tensors="np")["pixel_values"][0].transpose(0, 2, 3, 1)
  assert ours.crops.shape == theirs.shape
  np.testing.assert_allclose(ours.crops, theirs, atol=1e-6)


@pytest.mark.parametrize("size", SIZES, ids=[f"{w}x{h}" for w, h in SIZES])
def test_token_count_and_packed_features_match_transformers(size):
  image = tiny.random_image(*size)
  visual = sample_visuals([image], CONFIG)[0]
  layout = visual_layout(visual, CONFIG)
  width, height = size

  assert layout.num_tokens == _hf_token_count(width, height)

  rng = np.random.default_rng(1)
  dim = 8
  features = rng.normal(size=(visual.num_crops, CONFIG.vision.num_patches, dim)).astype(np.float32)
  newline = rng.normal(size=(dim,)).astype(np.float32)
  packed, lens = LlavaOnevisionModel.pack_image_features(
      _hf_model_stub(), [torch.from_numpy(features)], torch.tensor([[height, width]]),
      image_newline=torch.from_numpy(newline), vision_aspect_ratio=CONFIG.image_aspect_ratio)
  got = _gather(layout, features.reshape(-1, dim), newline)
  assert got.shape == tuple(packed[0].shape)
  np.testing.assert_allclose(got, packed[0].numpy(), atol=RESIZE_ATOL)


def test_known_token_counts():
  """Counts from running upstream: 384x384 -> 1485 tokens, 640x360 -> 2052."""
  for size, expected in (((384, 384), 1485), ((640, 360), 2052)):
    visual = sample_visuals([tiny.random_image(*size)], CONFIG)[0]
    assert visual_layout(visual, CONFIG).num_tokens == expected


def test_multi_image_crops_are_padded_squares_like_transformers():
  images = [tiny.random_image(500, 300, seed=1), tiny.random_image(200, 400, seed=2)]
  ours = sample_visuals(images, CONFIG)
  theirs = _hf_processor()(images=[images], return_tensors="np")["pixel_values"][0]
  for visual, expected in zip(ours, theirs):
    assert visual.num_crops == 1
    np.testing.assert_allclose(visual.crops[0], expected.transpose(1, 2, 0), atol=1e-6)
    # one crop's tokens and a single newline, as upstream packs a crop of a multi-image sample
    assert visual_layout(visual, CONFIG).num_tokens == CONFIG.vision.num_patches + 1


def test_video_frames_pool_like_transformers():
  frames = [tiny.random_image(320, 240, seed=s) for s in range(3)]
  visual = video_visual(frames, CONFIG)
  layout = visual_layout(visual, CONFIG)
  side = CONFIG.vision.patches_per_side
  pooled_side = (side + 1) // 2
  # "grid": every row of every pooled frame ends with a newline
  assert layout.num_tokens == 3 * pooled_side * (pooled_side + 1)

  rng = np.random.default_rng(2)
  dim = 6
  features = rng.normal(size=(3, side * side, dim)).astype(np.float32)
  newline = rng.normal(size=(dim,)).astype(np.float32)
  pooled = LlavaOnevisionModel.apply_pooling(_hf_model_stub(), torch.from_numpy(features)).numpy()
  got = _gather(layout, features.reshape(-1, dim), newline).reshape(3, pooled_side, pooled_side + 1, dim)
  np.testing.assert_allclose(got[:, :, :pooled_side].reshape(3, -1, dim), pooled, atol=RESIZE_ATOL)
  np.testing.assert_allclose(got[:, :, pooled_side], np.broadcast_to(newline, (3, pooled_side, dim)))


def test_unpadding_truncates_like_upstream_not_like_transformers():
  """1476x820 takes a 4x3 grid (108 x 81 feature rows/cols). Upstream keeps
  int(820 * 108 / 1476) = int(59.99999999999999) = 59 image rows (padding 11 above and below),
  then downsamples by sqrt(59 * 108 / (4 * 729)) = 1.478 to 39 x 73, plus a newline per row:
  729 + 39 * 74 = 3615 tokens. transformers rounds to 60 rows first and gets 3609."""
  image = tiny.random_image(1476, 820)
  visual = sample_visuals([image], CONFIG)[0]
  assert visual.grid == (4, 3)
  assert visual_layout(visual, CONFIG).num_tokens == 729 + 39 * 74
  assert _hf_token_count(1476, 820) == 729 + 40 * 72

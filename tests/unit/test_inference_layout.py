"""Image tokens at inference (upstream's evaluation path) and in training (upstream's training path).

A plain re-statement of upstream's branches decides, for each case, which path the images take:
`process_images` stacks several images, or one "pad" / "square" image, into one 4-D tensor, and
`prepare_inputs_labels_for_multimodal` sends a 4-D tensor to `encode_images`: `num_patches` tokens
per image, no image newline. Training hands over a list of tensors, whose one-crop images get the
newline with spatial_unpad. The anyres count of one image comes from its layout (tested against
transformers' pack_image_features in tests/parity/test_image_parity.py).
"""

import dataclasses

import numpy as np
import pytest

from lladav_jax.eval.bucketing import visual_shape
from lladav_jax.images.crops import anyres_visual, inference_visuals, pad_to_square, preprocess_crop, sample_visuals
from lladav_jax.images.feature_layout import visual_layout
from tests import tiny

SIZES = [(640, 360), (384, 384), (200, 600)]


def upstream_tokens(sizes, config, evaluation: bool) -> int:
  """Image tokens of one question as upstream's code paths give them."""
  tokens_per_crop = config.vision.num_patches
  aspect = "pad" if evaluation and len(sizes) > 1 else config.image_aspect_ratio
  anyres = aspect.startswith("anyres")
  if evaluation and not anyres:  # one stacked 4-D tensor -> encode_images
    return tokens_per_crop * len(sizes)
  total = 0
  for size in sizes:  # a list of per-image tensors
    if anyres and len(sizes) == 1:
      total += visual_layout(anyres_visual(tiny.random_image(*size), config), config).num_tokens
    elif config.patch_merge_type == "flat":
      total += tokens_per_crop
    else:  # one crop: image_feature[0], then the newline with unpad
      total += tokens_per_crop + ("unpad" in config.patch_merge_type)
  return total


CASES = [(aspect, merge, n) for aspect in ("anyres_max_4", "pad", "square")
         for merge in ("spatial_unpad", "flat") for n in (1, 2, 3)]


@pytest.mark.parametrize("aspect,merge,n", CASES)
def test_token_counts_follow_upstreams_branches(aspect, merge, n):
  config = dataclasses.replace(tiny.LLADAV, image_aspect_ratio=aspect, patch_merge_type=merge)
  images = [tiny.random_image(*size) for size in SIZES[:n]]
  inference = sum(visual_layout(v, config).num_tokens for v in inference_visuals(images, config))
  training = sum(visual_layout(v, config).num_tokens for v in sample_visuals(images, config))
  assert inference == upstream_tokens(SIZES[:n], config, evaluation=True)
  assert training == upstream_tokens(SIZES[:n], config, evaluation=False)
  # The evaluation's batch planning reads the same shapes from the image headers.
  planned = [visual_shape(size, config, multi_image=n > 1) for size in SIZES[:n]]
  assert sum(tokens for _, tokens in planned) == inference
  assert sum(crops for crops, _ in planned) == sum(v.num_crops for v in inference_visuals(images, config))


def test_two_images_at_inference_as_upstream_ran_them():
  # Upstream's evaluation on a 640x360 and a 384x384 image: 1458 image tokens (training: 1460).
  images = [tiny.random_image(640, 360), tiny.random_image(384, 384)]
  config = tiny.LLADAV  # anyres_max_4, spatial_unpad
  assert sum(visual_layout(v, config).num_tokens for v in inference_visuals(images, config)) == 1458
  assert sum(visual_layout(v, config).num_tokens for v in sample_visuals(images, config)) == 1460


def test_plain_crops_are_the_padded_or_resized_image():
  image = tiny.random_image(300, 200, seed=3)
  size = tiny.VISION.image_size
  for aspect, expected in (("pad", preprocess_crop(pad_to_square(image), size)),
                           ("square", preprocess_crop(image, size))):
    config = dataclasses.replace(tiny.LLADAV, image_aspect_ratio=aspect)
    (visual,) = inference_visuals([image], config)
    np.testing.assert_array_equal(visual.crops[0], expected)
  several = inference_visuals([image, image], tiny.LLADAV)
  np.testing.assert_array_equal(several[1].crops[0], preprocess_crop(pad_to_square(image), size))

"""Expanding image placeholders, batching and packing, and the errors bad samples raise."""

import numpy as np
import pytest
from PIL import Image

from lladav_jax.images.crops import sample_visuals, video_visual
from lladav_jax.images.feature_layout import visual_layout
from lladav_jax.images.loading import ImageDecodeError, load_image
from lladav_jax.samples import SampleError, build_sample, collate
from lladav_jax.tokens import IGNORE_LABEL, IMAGE_PLACEHOLDER_ID as IMG
from tests import tiny

CONFIG = tiny.LLADAV


def _visuals(*sizes):
  return sample_visuals([tiny.random_image(w, h, seed=w) for w, h in sizes], CONFIG)


def test_placeholder_expands_into_the_visual_tokens_with_labels_and_turns():
  visuals = _visuals((384, 384))
  count = visual_layout(visuals[0], CONFIG).num_tokens
  sample = build_sample([1, 2, IMG, 3], visuals, CONFIG, labels=[IGNORE_LABEL, 2, IGNORE_LABEL, 3],
                        turn_ids=[0, 0, 1, 1])
  assert sample.length == 3 + count == 3 + 1485
  assert sample.num_crops == 2
  np.testing.assert_array_equal(sample.input_ids[:2], [1, 2])
  assert sample.input_ids[-1] == 3
  assert sample.image_mask[2:2 + count].all() and not sample.image_mask[[0, 1, -1]].any()
  assert (sample.labels[2:2 + count] == IGNORE_LABEL).all() and sample.labels[-1] == 3
  assert (sample.turn_ids[2:2 + count] == 1).all()


def test_second_visual_indexes_its_own_crops():
  visuals = _visuals((500, 300), (300, 500))  # multi-image: one crop each
  sample = build_sample([IMG, 7, IMG], visuals, CONFIG)
  per_image = CONFIG.vision.num_patches + 1
  first, second = sample.image_index[:per_image - 1, 0], sample.image_index[per_image + 1:-1, 0]
  np.testing.assert_array_equal(first, np.arange(729))
  np.testing.assert_array_equal(second, 729 + np.arange(729))


@pytest.mark.parametrize("ids,n_images,match", [
    ([1, IMG, 2, IMG], 1, "2 image placeholders in the text but 1"),
    ([1, 2], 1, "0 image placeholders in the text but 1"),
    ([1, -5, IMG], 1, "token id -5 at position 1"),
    ([1, 10**6, IMG], 1, "outside the vocabulary"),
])
def test_bad_samples_are_named(ids, n_images, match):
  with pytest.raises(SampleError, match=match):
    build_sample(ids, _visuals(*[(64, 64)] * n_images), CONFIG, sample_id="rec-17")
  with pytest.raises(SampleError, match="rec-17"):
    build_sample(ids, _visuals(*[(64, 64)] * n_images), CONFIG, sample_id="rec-17")


def test_over_length_is_an_error_unless_truncating():
  visuals = _visuals((384, 384))
  with pytest.raises(SampleError, match="rec-3: 1487 tokens .* exceed the maximum length 1000"):
    build_sample([1, IMG, 2], visuals, CONFIG, max_length=1000, sample_id="rec-3")
  cut = build_sample([1, IMG, 2], visuals, CONFIG, labels=[1, IGNORE_LABEL, 2], max_length=1000, truncate=True)
  assert cut.length == 1000 and cut.labels.shape == (1000,) and cut.image_mask[1:].all()


def test_collate_pads_and_packs_segments():
  a = build_sample([1, IMG, 2], _visuals((384, 384)), CONFIG)
  c = build_sample([IMG, 6], _visuals((640, 360)), CONFIG)
  b = build_sample([3, 4, 5], [], CONFIG)
  batch = collate([[a, c], [b]], seq_len=3600, max_crops=6, config=CONFIG)
  np.testing.assert_array_equal(batch["segment_ids"][0, :a.length], 1)
  np.testing.assert_array_equal(batch["segment_ids"][0, a.length:a.length + c.length], 2)
  assert (batch["segment_ids"][0, a.length + c.length:] == 0).all()
  np.testing.assert_array_equal(batch["positions"][0, a.length:a.length + 3], [0, 1, 2])
  np.testing.assert_array_equal(batch["crop_mask"], [[1, 1, 1, 1, 1, 0], [0, 0, 0, 0, 0, 0]])
  np.testing.assert_array_equal(batch["pixel_values"][0, 2:5], c.crops)
  # The packed sample's tokens point at its own crops, after the first sample's two.
  assert batch["image_index"][0, 1, 0] == 0
  assert batch["image_index"][0, a.length, 0] == 2 * 729
  # Newline tokens point at the slot after the row's crop budget.
  is_newline = c.image_index[:, 0] == -1
  assert is_newline.sum() == 27  # 640x360: 27 rows of tile features survive unpadding
  assert (batch["image_index"][0, a.length:a.length + c.length][is_newline, 0] == 6 * 729).all()
  assert not batch["image_mask"][1].any() and batch["segment_ids"][1, :3].tolist() == [1, 1, 1]
  with pytest.raises(SampleError, match="do not fit the sequence length 100"):
    collate([[a]], seq_len=100, max_crops=6, config=CONFIG)
  with pytest.raises(SampleError, match="crop budget 1"):
    collate([[a]], seq_len=2100, max_crops=1, config=CONFIG)


def test_video_is_one_visual_of_pooled_frames():
  frames = [tiny.random_image(320, 240, seed=s) for s in range(4)]
  sample = build_sample([1, IMG], [video_visual(frames, CONFIG)], CONFIG)
  assert sample.num_crops == 4
  assert sample.length == 1 + 4 * 14 * 15


def test_undecodable_and_missing_images_name_the_file(tmp_path):
  bad = tmp_path / "broken.jpg"
  bad.write_bytes(b"not an image at all")
  with pytest.raises(ImageDecodeError, match="broken.jpg"):
    load_image(bad)
  with pytest.raises(ImageDecodeError, match="not found: .*missing.png"):
    load_image(tmp_path / "missing.png")


def test_image_modes_become_rgb(tmp_path):
  grey16 = Image.fromarray((np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16))
  grey16.save(tmp_path / "g16.png")
  loaded = load_image(tmp_path / "g16.png")
  assert loaded.mode == "RGB" and np.asarray(loaded).max() > 200  # rescaled, not clipped to white
  rgba = Image.new("RGBA", (8, 8), (10, 20, 30, 0))
  rgba.save(tmp_path / "a.png")
  np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "a.png"))[0, 0], [10, 20, 30])
  Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(tmp_path / "c.jpg")
  assert load_image(tmp_path / "c.jpg").mode == "RGB"
  Image.new("P", (8, 8), 3).save(tmp_path / "p.png")
  assert load_image(tmp_path / "p.png").mode == "RGB"

"""Images and video frames of records: decompression bombs, pixel limits, uniform frame sampling (PyAV)."""

import json

import numpy as np
import pytest

from lladav_jax.data import DataConfig, SourceSpec, VideoOptions, make_data_iterator, media, rejects
from lladav_jax.data.rejects import RecordRejected
from lladav_jax.images.loading import ImageTooLargeError, load_image
from tests import tiny
from tests.data.conftest import CONFIG, write_json
from tests.data.test_pipeline import _bomb_png

FRAMES, FPS = 25, 10


@pytest.fixture(scope="module")
def video(tmp_path_factory):
  """25 frames at 10 fps; frame i is uniformly grey at level 10 * i."""
  import av
  path = tmp_path_factory.mktemp("video") / "clip.mp4"
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mpeg4", rate=FPS)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for i in range(FRAMES):
      frame = av.VideoFrame.from_ndarray(np.full((48, 64, 3), 10 * i, np.uint8), format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def _levels(frames):
  """Which frame each decoded image is (the codec moves grey levels by a few units)."""
  return [int(round(np.asarray(f, np.float64).mean() / 10)) for f in frames]


@pytest.mark.parametrize("options,expected", [
    (VideoOptions(video_fps=1, frames_upbound=0), [0, 10, 20]),  # every round(10 / 1)-th frame
    # every 5th frame gives 5 > 4 frames: 4 spread uniformly instead, linspace(0, 24, 4) rounded down
    (VideoOptions(video_fps=2, frames_upbound=4), [0, 8, 16, 24]),
    (VideoOptions(video_fps=1, frames_upbound=4, force_sample=True), [0, 8, 16, 24]),  # forced
    (VideoOptions(video_fps=1, frames_upbound=3, force_sample=True), [0, 12, 24]),
])
def test_video_frames_are_sampled_as_upstream(video, options, expected):
  spec = SourceSpec(str(video.parent / "data.json"))
  frames = media.load_video_frames(video.name, spec, options, max_pixels=None)
  assert _levels(frames) == expected and frames[0].size == (64, 48) and frames[0].mode == "RGB"


def test_unreadable_video_and_large_frames_are_rejected(video, tmp_path):
  (tmp_path / "bad.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not a video")
  spec = SourceSpec(str(tmp_path / "data.json"), video_folder=str(tmp_path))
  with pytest.raises(RecordRejected, match="cannot decode video .*bad.mp4") as e:
    media.load_video_frames("bad.mp4", spec, VideoOptions(), None)
  assert e.value.reason == rejects.VIDEO_UNREADABLE
  with pytest.raises(RecordRejected, match="video file not found") as e:
    media.load_video_frames("none.mp4", spec, VideoOptions(), None)
  assert e.value.reason == rejects.IMAGE_MISSING
  with pytest.raises(RecordRejected, match="64x48 pixels, more than the limit of 1000") as e:
    media.load_video_frames(video.name, SourceSpec(str(video.parent / "d.json")), VideoOptions(), 1000)
  assert e.value.reason == rejects.IMAGE_TOO_LARGE


def test_video_record_through_the_pipeline(video, tokenizer):
  record = {"id": "v", "video": video.name, "conversations": [
      {"from": "human", "value": "What happens? <image>"}, {"from": "gpt", "value": "It gets brighter."}]}
  path = write_json(video.parent / "videos.json", [record])
  config = DataConfig(sources=(SourceSpec(path),), num_workers=0, num_epochs=1, prefetch_batches=0,
                      seq_len_buckets=(4096,), crop_buckets=(4,), video=VideoOptions(frames_upbound=4, force_sample=True))
  it = make_data_iterator(config, CONFIG, tokenizer, shard_index=0, shard_count=1)
  (batch,) = list(it)
  it.close()
  assert batch["crop_mask"][0].tolist() == [True] * 4
  # Each crop is one whole frame resized, in [-1, 1]: its mean gives the frame back.
  levels = [int(round((c.mean() * 0.5 + 0.5) * 255 / 10)) for c in batch["pixel_values"][0]]
  assert levels == [0, 8, 16, 24]
  assert batch["image_mask"][0].sum() > 0 and (batch["labels"][0][batch["image_mask"][0]] == -100).all()


def test_decompression_bombs_and_pixel_limits(tmp_path):
  _bomb_png(tmp_path / "bomb.png")
  with pytest.raises(ImageTooLargeError, match="bomb.png is too large to decode"):  # PIL's own limit
    load_image(tmp_path / "bomb.png")
  tiny.random_image(64, 48).save(tmp_path / "ok.png")
  with pytest.raises(ImageTooLargeError, match="64x48 pixels, more than the limit of 3000"):
    load_image(tmp_path / "ok.png", max_pixels=3000)
  assert load_image(tmp_path / "ok.png", max_pixels=3072).size == (64, 48)
  spec = SourceSpec(str(tmp_path / "data.json"))
  with pytest.raises(RecordRejected) as e:
    media.load_images(("bomb.png",), spec, None)
  assert e.value.reason == rejects.IMAGE_TOO_LARGE


def test_image_folders_fall_back_like_upstream(tmp_path):
  (tmp_path / "first").mkdir()
  (tmp_path / "second").mkdir()
  tiny.random_image(30, 20).save(tmp_path / "second" / "a.png")
  spec = SourceSpec(str(tmp_path / "d.json"), image_folder=str(tmp_path / "first"),
                    image_folder_fallback=str(tmp_path / "second"))
  assert media.load_images(("a.png",), spec, None)[0].size == (30, 20)
  assert json.dumps(media.resolve("a.png", None, None, "/data")) == '"/data/a.png"'

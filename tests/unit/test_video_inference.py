"""Videos at inference against a plain re-statement of upstream's evaluation path.

Upstream (lmms-eval llava_onevision_llada + llava_arch.prepare_inputs_labels_for_multimodal): the
wrapper picks frames with np.linspace (decord: exactly max_frames_num; pyav: at most that many plus
the last), preprocesses them with SigLIP's processor (bicubic 384 x 384, [-1, 1]), hands the model a
list holding one [F, 3, 384, 384] tensor with modalities=["video"]; the model pools each frame's
27 x 27 features to 14 x 14 (get_2dPool, bilinear by the wrapper's default), adds image newlines per
mm_newline_position, and splices the video's features into its placeholders with an IndexError
fallback. The re-statement below runs those steps in torch on random features and is compared with
the project's layouts gathered from the same features.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers.image_transforms import normalize, rescale, resize
from transformers.image_utils import ChannelDimension, PILImageResampling

from lladav_jax.eval.bucketing import video_shape
from lladav_jax.images import video
from lladav_jax.images.crops import KIND_VIDEO, Visual, video_placeholder_visuals, video_visual
from lladav_jax.images.feature_layout import NEWLINE, visual_layout
from tests import tiny

CONFIG = tiny.LLADAV
SIDE = CONFIG.vision.patches_per_side
DIM = 5


# --- upstream, re-stated ---

def upstream_frame_indices(total: int, max_frames: int, backend: str) -> list[int]:
  if backend == "decord":  # load_video
    return np.linspace(0, total - 1, max_frames, dtype=int).tolist()
  indices = np.linspace(0, total - 1, min(total, max_frames), dtype=int)  # read_video_pyav
  if total - 1 not in indices:
    indices = np.append(indices, total - 1)
  return indices.tolist()


def upstream_pool(features: torch.Tensor, mode: str) -> torch.Tensor:
  """get_2dPool with its default stride 2: [F, 729, D] -> [F, 196 or 169, D]."""
  frames, _, dim = features.shape
  x = features.view(frames, SIDE, SIDE, -1).permute(0, 3, 1, 2)
  if mode == "average":
    x = F.avg_pool2d(x, 2)
  else:
    x = F.interpolate(x, size=[math.ceil(SIDE / 2), math.ceil(SIDE / 2)], mode="bilinear")
  return x.permute(0, 2, 3, 1).reshape(frames, -1, dim)


def upstream_newlines(pooled: torch.Tensor, newline: torch.Tensor, position: str) -> torch.Tensor:
  frames, tokens, dim = pooled.shape
  if position == "grid":  # add_token_per_grid
    side = int(math.sqrt(tokens))
    x = pooled.view(frames, 1, side, side, -1).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)
    x = torch.cat((x, newline[:, None, None].expand(*x.shape[:-1], 1)), dim=-1)
    return x.flatten(1, 2).transpose(0, 1)
  if position == "frame":  # add_token_per_frame
    x = pooled.permute(2, 0, 1)
    x = torch.cat((x, newline[:, None, None].expand(*x.shape[:-1], 1)), dim=-1)
    return x.permute(1, 2, 0).flatten(0, 1)
  if position == "one_token":
    return torch.cat((pooled.flatten(0, 1), newline[None]), dim=0)
  return pooled.flatten(0, 1)  # no_token


def upstream_splice(video_features: torch.Tensor, placeholders: int) -> list[torch.Tensor]:
  """The features each placeholder receives from a batch holding one video."""
  image_features = [video_features]
  out, cur = [], 0
  for _ in range(placeholders):
    try:
      feature = image_features[cur]
    except IndexError:
      feature = image_features[cur - 1]
    cur += 1
    out.append(feature)
  return out


def upstream_preprocess(frame: np.ndarray) -> np.ndarray:
  """SigLipImageProcessor.preprocess on a decoded frame (uint8 [H, W, 3]), channels last."""
  x = resize(frame, size=(384, 384), resample=PILImageResampling.BICUBIC, data_format=ChannelDimension.LAST)
  x = rescale(x, scale=1 / 255, data_format=ChannelDimension.LAST)
  return normalize(x, mean=(0.5,) * 3, std=(0.5,) * 3, data_format=ChannelDimension.LAST)


# --- the project's side ---

def gather(layout, features: np.ndarray, newline: np.ndarray) -> np.ndarray:
  table = np.concatenate([features.reshape(-1, features.shape[-1]), newline[None]])
  index = np.where(layout.index == NEWLINE, table.shape[0] - 1, layout.index)
  return np.einsum("tk,tkd->td", layout.weight, table[index])


def placeholder_features(visuals, config, features, newline):
  """What each placeholder gets: its visual's layout over the features of that visual's frames."""
  out = []
  for visual in visuals:
    frames = [int(round(c[0, 0, 0])) for c in visual.crops]  # shape-only crops carry their frame index
    out.append(gather(visual_layout(visual, config), features[frames], newline))
  return out


def shape_only_video(num_frames: int, pool_mode: str | None) -> Visual:
  """A video visual whose one-pixel crops hold their frame's index (the layout reads only the count)."""
  crops = np.broadcast_to(np.arange(num_frames, dtype=np.float32)[:, None, None, None], (num_frames, 1, 1, 3))
  return Visual(KIND_VIDEO, crops, (1, 1), pool_mode=pool_mode)


@pytest.mark.parametrize("total", [1, 2, 5, 6, 31, 32, 33, 100])
@pytest.mark.parametrize("max_frames", [1, 2, 8, 32])
@pytest.mark.parametrize("backend", video.FRAME_RULES)
def test_frame_indices_follow_the_wrappers_backends(total, max_frames, backend):
  settings = video.VideoSettings(max_frames=max_frames, frame_rule=backend)
  assert video.sample_frames(total, settings).tolist() == upstream_frame_indices(total, max_frames, backend)


@pytest.mark.parametrize("position", ["grid", "frame", "one_token", "no_token"])
@pytest.mark.parametrize("pool_mode", ["bilinear", "average"])
@pytest.mark.parametrize("strategy,num_frames", [("single", 1), ("single", 3), ("multiple", 1), ("multiple", 2),
                                                 ("multiple", 3), ("multiple", 4)])
def test_video_tokens_match_upstreams_model_path(position, pool_mode, strategy, num_frames):
  config = dataclasses.replace(CONFIG, newline_position=position)
  rng = np.random.default_rng(num_frames)
  features = rng.normal(size=(num_frames, SIDE * SIDE, DIM)).astype(np.float32)
  newline = rng.normal(size=(DIM,)).astype(np.float32)
  clip = shape_only_video(num_frames, pool_mode)
  settings = video.VideoSettings(token_strategy=strategy, pool_mode=pool_mode)
  ours = placeholder_features(video_placeholder_visuals(clip, strategy), config, features, newline)

  whole = upstream_newlines(upstream_pool(torch.from_numpy(features), pool_mode), torch.from_numpy(newline), position)
  placeholders = settings.placeholders(num_frames)
  assert len(ours) == placeholders
  if strategy == "multiple" and num_frames >= 3:
    with pytest.raises(IndexError):  # upstream fails here; each placeholder gets its own frame instead
      upstream_splice(whole, placeholders)
    for f, got in enumerate(ours):
      one = upstream_newlines(upstream_pool(torch.from_numpy(features[f:f + 1]), pool_mode),
                              torch.from_numpy(newline), position)
      np.testing.assert_allclose(got, one.numpy(), atol=3e-5)
  else:
    for got, expected in zip(ours, upstream_splice(whole, placeholders)):
      np.testing.assert_allclose(got, expected.numpy(), atol=3e-5)
  # The evaluation's planning from the frame count alone agrees.
  assert video_shape(num_frames, config, settings) == (placeholders, sum(v.num_crops for v in
                                                                          video_placeholder_visuals(clip, strategy)),
                                                       sum(len(o) for o in ours))


def test_wrapper_pool_mode_is_written_over_the_checkpoints():
  config = dataclasses.replace(CONFIG, spatial_pool_mode="average")
  training = shape_only_video(2, None)
  inference = shape_only_video(2, "bilinear")
  assert visual_layout(training, config).num_tokens == 2 * 13 * 14
  assert visual_layout(inference, config).num_tokens == 2 * 14 * 15


def test_six_frames_give_the_observed_1260_tokens():
  # Running upstream on 6 frames with mm_newline_position "grid" gave 1260 image tokens.
  assert video_shape(6, CONFIG, video.VideoSettings()) == (1, 6, 1260)


def test_decoded_frames_and_crops_are_upstreams(tmp_path):
  path = tiny.write_video(tmp_path / "clip.mp4", 7, size=(80, 60))
  settings = video.VideoSettings(max_frames=10)  # decord: 10 of 7 frames, some repeated
  indices = video.sample_frames(video.frame_count(path), settings)
  assert video.frame_count(path) == 7 and len(indices) == 10
  frames = video.decode_frames(path, indices)

  import av  # read_video_pyav's loop: decode in order, keep the wanted indices
  with av.open(str(path)) as container:
    reference = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
  for frame, i in zip(frames, indices):
    np.testing.assert_array_equal(np.asarray(frame), reference[i])
  clip = video_visual(frames, CONFIG, pool_mode=settings.pool_mode)
  expected = np.stack([upstream_preprocess(reference[i]) for i in indices])
  np.testing.assert_allclose(clip.crops, expected, atol=1e-6)


def test_unreadable_videos_name_the_file(tmp_path):
  with pytest.raises(video.VideoError, match="not found: .*missing.mp4"):
    video.frame_count(tmp_path / "missing.mp4")
  bad = tmp_path / "broken.mp4"
  bad.write_bytes(b"\0\1 not a video")
  with pytest.raises(video.VideoError, match="broken.mp4"):
    video.frame_count(bad)
  path = tiny.write_video(tmp_path / "short.mp4", 3)
  with pytest.raises(video.VideoError, match="frame 5 asked, only 3"):
    video.decode_frames(path, [0, 5])
  with pytest.raises(ValueError, match="max_frames"):
    video.VideoSettings(max_frames=0)

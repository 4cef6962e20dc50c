"""Video files at inference: which frames upstream's evaluation reads, decoded with PyAV (host side).

Upstream's lmms-eval wrapper (llava_onevision_llada) takes `max_frames_num` frames spread uniformly,
np.linspace(0, total - 1, n, dtype=int), with the rule of its `video_decode_backend`:
  * "decord" (its default, used by LLaDA-V's evaluation script): exactly n frames, repeated when the
    video is shorter;
  * "pyav": min(total, n) frames, and the last frame appended when the spread misses it (one frame
    asked of a longer video gives two).
The frame count is the container's (no pixels decoded); frames are decoded in order, as PyAV's
`to_ndarray(format="rgb24")` gives them. `VideoSettings` holds these choices and the rest of the
wrapper's video arguments (token_strategy, mm_spatial_pool_mode).

    settings = VideoSettings(max_frames=32)
    indices = sample_frames(frame_count("clip.mp4"), settings)
    frames = decode_frames("clip.mp4", indices)  # RGB PIL images, one per index
"""

import dataclasses
import os

import numpy as np
from PIL import Image

from lladav_jax.model_config import SPATIAL_POOL_MODES

FRAME_RULES = ("decord", "pyav")
TOKEN_STRATEGIES = ("single", "multiple")


class VideoError(ValueError):
  """A video that cannot be read; the message names the file."""


@dataclasses.dataclass(frozen=True)
class VideoSettings:
  """The wrapper's video arguments: max_frames (max_frames_num), frame_rule (the frame choice of its
  video_decode_backend), token_strategy ("single": one <image> for the video, "multiple": one per
  frame) and pool_mode (mm_spatial_pool_mode, which the wrapper writes over the checkpoint's)."""

  max_frames: int = 32
  frame_rule: str = "decord"
  token_strategy: str = "single"
  pool_mode: str = "bilinear"

  def __post_init__(self):
    if self.max_frames < 1:
      raise ValueError(f"max_frames must be at least 1, got {self.max_frames}")
    for name, value, choices in (("frame_rule", self.frame_rule, FRAME_RULES),
                                 ("token_strategy", self.token_strategy, TOKEN_STRATEGIES),
                                 ("pool_mode", self.pool_mode, SPATIAL_POOL_MODES)):
      if value not in choices:
        raise ValueError(f"{name} {value!r} is not supported; choices: {choices}")

  def placeholders(self, num_frames: int) -> int:
    """How many `<image>` placeholders the question gets."""
    return num_frames if self.token_strategy == "multiple" else 1


def sample_frames(total: int, settings: VideoSettings) -> np.ndarray:
  """Indices of the frames upstream's evaluation reads from a video of `total` frames."""
  if total < 1:
    raise ValueError(f"a video needs at least one frame, got {total}")
  if settings.frame_rule == "decord":
    return np.linspace(0, total - 1, settings.max_frames, dtype=int)
  indices = np.linspace(0, total - 1, min(total, settings.max_frames), dtype=int)
  if total - 1 not in indices:
    indices = np.append(indices, total - 1)
  return indices


def _open(path: str | os.PathLike):
  import av  # only needed for videos
  name = os.fspath(path)
  if not os.path.isfile(name):
    raise VideoError(f"video file not found: {name}")
  try:
    container = av.open(name)
  except Exception as e:  # PyAV raises its own error types (FFmpegError and subclasses)
    raise VideoError(f"cannot open video {name}: {e}") from e
  if not container.streams.video:
    container.close()
    raise VideoError(f"video {name} has no video stream")
  return container


def frame_count(path: str | os.PathLike) -> int:
  """The number of frames of the first video stream: the container's count, else its packets counted
  (nothing is decoded)."""
  with _open(path) as container:
    stream = container.streams.video[0]
    try:
      total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    except Exception as e:
      raise VideoError(f"cannot read video {os.fspath(path)}: {e}") from e
  if total < 1:
    raise VideoError(f"video {os.fspath(path)} has no frames")
  return int(total)


def decode_indexed(path: str | os.PathLike, wanted) -> tuple[dict[int, Image.Image], int]:
  """The frames at the `wanted` indices as RGB images, and how many frames were decoded to reach them
  (fewer than asked when the container holds fewer frames than it announced)."""
  wanted = np.asarray(wanted, dtype=np.int64)
  keep = set(wanted.tolist())
  decoded, seen = {}, 0
  with _open(path) as container:
    try:
      for frame in container.decode(container.streams.video[0]):
        if seen in keep:
          decoded[seen] = Image.fromarray(frame.to_ndarray(format="rgb24"))
        seen += 1
        if seen > wanted.max():
          break
    except Exception as e:
      raise VideoError(f"cannot decode video {os.fspath(path)}: {e}") from e
  return decoded, seen


def decode_frames(path: str | os.PathLike, indices) -> list[Image.Image]:
  """The frames at `indices` (repeats allowed), in that order."""
  decoded, seen = decode_indexed(path, indices)
  missing = [int(i) for i in indices if int(i) not in decoded]
  if missing:
    raise VideoError(f"video {os.fspath(path)}: frame {missing[0]} asked, only {seen} frame(s) could be decoded")
  return [decoded[int(i)] for i in indices]

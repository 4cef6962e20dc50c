"""Images and video frames of a record, read from disk (PIL, PyAV), with failures as rejects.

Paths follow upstream: an image path is joined to `image_folder`, and `image_folder_fallback`
(upstream's image_folder_2) is tried when the file is not in the first. Without a folder, a relative
path is taken relative to the data file. Video frames are sampled as upstream's
process_video_with_decord does: every round(fps / video_fps)-th frame, or, when that gives more than
`frames_upbound` frames (or `force_sample`), `frames_upbound` frames spread uniformly
(np.linspace(0, total - 1, n) rounded down).
"""

import dataclasses
import os

import numpy as np
from PIL import Image

from lladav_jax.data import rejects
from lladav_jax.data.rejects import RecordRejected
from lladav_jax.data.sources import SourceSpec
from lladav_jax.images.loading import ImageDecodeError, ImageNotFoundError, ImageTooLargeError, load_image
from lladav_jax.images.video import decode_indexed


@dataclasses.dataclass(frozen=True)
class VideoOptions:
  """Upstream's DataArguments.video_fps / frames_upbound / force_sample (LLaDA-V trains with 32 frames)."""

  video_fps: int = 1
  frames_upbound: int = 32
  force_sample: bool = False


def resolve(name: str, folder: str | None, fallback: str | None, base_dir: str) -> str:
  if folder is not None:
    primary = os.path.join(folder, name)
    if fallback is not None and not os.path.exists(primary):
      return os.path.join(fallback, name)
    return primary
  if fallback is not None:
    return os.path.join(fallback, name)
  return os.path.join(base_dir, name)


def load_images(names: tuple[str, ...], spec: SourceSpec, max_pixels: int | None) -> list[Image.Image]:
  images = []
  for name in names:
    path = resolve(name, spec.image_folder, spec.image_folder_fallback, spec.media_dir)
    try:
      images.append(load_image(path, max_pixels=max_pixels))
    except ImageNotFoundError as e:
      raise RecordRejected(rejects.IMAGE_MISSING, str(e)) from e
    except ImageTooLargeError as e:
      raise RecordRejected(rejects.IMAGE_TOO_LARGE, str(e)) from e
    except ImageDecodeError as e:
      raise RecordRejected(rejects.IMAGE_CORRUPT, str(e)) from e
    except Exception as e:  # malformed files can make PIL's decoders raise almost anything
      raise RecordRejected(rejects.IMAGE_CORRUPT, f"cannot decode image {path}: {type(e).__name__}: {e}") from e
  return images


def frame_indices(total: int, fps: float, options: VideoOptions) -> np.ndarray:
  """Which of `total` frames upstream samples (process_video_with_decord)."""
  step = max(1, round(fps / options.video_fps))  # upstream divides by zero below 0.5 fps; one frame per step then
  indices = np.arange(0, total, step)
  if options.frames_upbound > 0 and (len(indices) > options.frames_upbound or options.force_sample):
    indices = np.linspace(0, total - 1, options.frames_upbound, dtype=int)
  return indices


def load_video_frames(name: str, spec: SourceSpec, options: VideoOptions,
                      max_pixels: int | None) -> list[Image.Image]:
  """Decodes the sampled frames of a video file as RGB images (PyAV)."""
  import av  # only needed for video records
  path = resolve(name, spec.video_folder, None, spec.media_dir)
  if not os.path.exists(path):
    raise RecordRejected(rejects.IMAGE_MISSING, f"video file not found: {path}")
  try:
    with av.open(path) as container:
      stream = container.streams.video[0]
      width, height = stream.width, stream.height
      fps = float(stream.average_rate or stream.guessed_rate or 0)
      total = stream.frames or sum(1 for packet in container.demux(stream) if packet.size)
    if max_pixels is not None and width * height > max_pixels:
      raise RecordRejected(rejects.IMAGE_TOO_LARGE, f"video {path} frames have {width}x{height} pixels, more "
                           f"than the limit of {max_pixels}")
    if total <= 0 or fps <= 0:
      raise RecordRejected(rejects.VIDEO_UNREADABLE, f"video {path}: no frames or no frame rate")
    wanted = frame_indices(total, fps, options)
    decoded, seen = decode_indexed(path, wanted)
    if len(decoded) < len(set(wanted.tolist())) and seen > 0:
      # The container announced more frames than it holds: sample again from the true count.
      wanted = frame_indices(seen, fps, options)
      decoded, seen = decode_indexed(path, wanted)
  except RecordRejected:
    raise
  except Exception as e:  # PyAV raises its own error types (FFmpegError and subclasses)
    raise RecordRejected(rejects.VIDEO_UNREADABLE, f"cannot decode video {path}: {e}") from e
  if not decoded or len(decoded) < len(set(wanted.tolist())):
    raise RecordRejected(rejects.VIDEO_UNREADABLE, f"video {path}: only {seen} frame(s) could be decoded")
  return [decoded[i] for i in wanted.tolist()]

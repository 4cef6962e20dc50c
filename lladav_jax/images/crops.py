"""Turning images and video frames into normalised crops for the vision tower (host side, PIL).

Follows upstream LLaDA-V exactly:
  * one image, anyres: the whole image resized to a square crop (aspect ratio not kept), then the
    tiles of the best grid among the pinpoints (image resized to fit the grid, centred on black);
  * several images in one sample: each padded to a square with the mean colour, one crop each;
  * video: every frame resized to a square crop (upstream's evaluation preprocesses the frames
    directly, without padding).
Crops are bicubic-resized uint8, then scaled to [-1, 1] (mean = std = 0.5), channels last.

Training and inference differ where upstream's do. Training hands the model a list of per-image
crop tensors, and a one-crop image gets the image-newline vector after its tokens (`KIND_SINGLE`).
Upstream's evaluation turns several images (and one image whose aspect ratio is "pad" or
"square") into one stacked tensor, which the model encodes without any newline (`KIND_PLAIN`):
`sample_visuals` is the training rule, `inference_visuals` the evaluation rule. A video is one
visual of pooled frames; `video_placeholder_visuals` says which tokens each of its `<image>`
placeholders gets at inference (upstream's token_strategy).
"""

import dataclasses
import math
from typing import Sequence

import numpy as np
from PIL import Image

from lladav_jax.images.video import TOKEN_STRATEGIES
from lladav_jax.model_config import LLaDAVConfig

_MEAN = 0.5
_STD = 0.5
# The pad colour of square padding: the mean in 8-bit, as upstream computes it (int(0.5 * 255)).
_PAD_COLOR = (int(_MEAN * 255),) * 3

KIND_ANYRES = "anyres"  # base crop + grid tiles
KIND_SINGLE = "single"  # one crop (training: an image newline follows with spatial_unpad)
KIND_PLAIN = "plain"  # one crop encoded as it is (inference: never an image newline)
KIND_VIDEO = "video"  # one crop per frame


@dataclasses.dataclass(frozen=True)
class Visual:
  """One image or video of a sample, ready for the vision tower.

  crops: float32 [num_crops, S, S, 3]; image_size: original (width, height);
  grid: (columns, rows) of anyres tiles, None otherwise; pool_mode: how a video's frames are pooled
  2x2 (None: the checkpoint's mm_spatial_pool_mode, as training; upstream's evaluation wrapper
  writes its own argument over it).
  """

  kind: str
  crops: np.ndarray
  image_size: tuple[int, int]
  grid: tuple[int, int] | None = None
  pool_mode: str | None = None

  @property
  def num_crops(self) -> int:
    return int(self.crops.shape[0])


def select_best_resolution(image_size: tuple[int, int],
                           candidates: Sequence[tuple[int, int]]) -> tuple[int, int]:
  """The (width, height) candidate that keeps the most image pixels, then wastes the fewest.

  Ties keep the earliest candidate, so the pinpoint order matters (upstream's is width-major).
  """
  width, height = image_size
  best, best_effective, best_wasted = None, -1, math.inf
  for cand_w, cand_h in candidates:
    scale = min(cand_w / width, cand_h / height)
    fitted_w, fitted_h = int(width * scale), int(height * scale)
    effective = min(fitted_w * fitted_h, width * height)
    wasted = cand_w * cand_h - effective
    if effective > best_effective or (effective == best_effective and wasted < best_wasted):
      best, best_effective, best_wasted = (cand_w, cand_h), effective, wasted
  assert best is not None, "no candidate resolutions"
  return best


def resize_and_pad(image: Image.Image, target: tuple[int, int]) -> Image.Image:
  """Resizes to fit `target` (width, height) keeping the aspect ratio, centred on black."""
  width, height = image.size
  target_w, target_h = target
  scale_w, scale_h = target_w / width, target_h / height
  if scale_w < scale_h:
    new_w, new_h = target_w, min(math.ceil(height * scale_w), target_h)
  else:
    new_w, new_h = min(math.ceil(width * scale_h), target_w), target_h
  canvas = Image.new("RGB", (target_w, target_h), (0, 0, 0))
  canvas.paste(image.resize((new_w, new_h), Image.Resampling.BICUBIC),
               ((target_w - new_w) // 2, (target_h - new_h) // 2))
  return canvas


def pad_to_square(image: Image.Image, color: tuple[int, int, int] = _PAD_COLOR) -> Image.Image:
  width, height = image.size
  if width == height:
    return image
  side = max(width, height)
  canvas = Image.new(image.mode, (side, side), color)
  canvas.paste(image, ((side - width) // 2, (side - height) // 2))
  return canvas


def preprocess_crop(image: Image.Image, size: int) -> np.ndarray:
  """Bicubic resize to size x size, then to float32 in [-1, 1]; [size, size, 3]."""
  if image.size != (size, size):
    image = image.resize((size, size), Image.Resampling.BICUBIC)
  pixels = (np.asarray(image, dtype=np.uint8).astype(np.float64) * (1.0 / 255.0)).astype(np.float32)
  return (pixels - np.float32(_MEAN)) / np.float32(_STD)


def anyres_visual(image: Image.Image, config: LLaDAVConfig) -> Visual:
  size = config.vision.image_size
  best_w, best_h = select_best_resolution(image.size, config.image_grid_pinpoints)
  padded = resize_and_pad(image, (best_w, best_h))
  tiles = [padded.crop((x, y, x + size, y + size))
           for y in range(0, best_h, size) for x in range(0, best_w, size)]
  base = image.resize((size, size), Image.Resampling.BICUBIC)
  crops = np.stack([preprocess_crop(c, size) for c in [base] + tiles])
  return Visual(KIND_ANYRES, crops, image.size, grid=(best_w // size, best_h // size))


def image_visual(image: Image.Image, config: LLaDAVConfig, *, multi_image: bool = False) -> Visual:
  """Crops of one image; `multi_image` (a sample with several images) forces square padding."""
  size = config.vision.image_size
  if config.is_anyres and not multi_image:
    return anyres_visual(image, config)
  if multi_image or config.image_aspect_ratio == "pad":
    crop = preprocess_crop(pad_to_square(image), size)
  else:
    crop = preprocess_crop(image, size)
  return Visual(KIND_SINGLE, crop[None], image.size)


def video_visual(frames: Sequence[Image.Image], config: LLaDAVConfig, pool_mode: str | None = None) -> Visual:
  if not frames:
    raise ValueError("a video needs at least one frame")
  size = config.vision.image_size
  crops = np.stack([preprocess_crop(frame, size) for frame in frames])
  return Visual(KIND_VIDEO, crops, frames[0].size, pool_mode=pool_mode)


def video_placeholder_visuals(video: Visual, token_strategy: str) -> list[Visual]:
  """What each `<image>` placeholder of a video question gets, as upstream's evaluation splices one
  video tensor: "single" (one placeholder): the whole video. "multiple" (one placeholder per frame):
  upstream hands the first placeholder the whole video and, finding no second visual, repeats the
  last one, so one and two frames give the whole video once per placeholder; from three frames on its
  fallback indexes past the end and raises IndexError. There each placeholder gets its own frame,
  pooled and laid out as a one-frame video."""
  if token_strategy not in TOKEN_STRATEGIES:
    raise ValueError(f"token_strategy {token_strategy!r} is not supported; choices: {TOKEN_STRATEGIES}")
  if token_strategy == "single" or video.num_crops <= 2:
    return [video] * (1 if token_strategy == "single" else video.num_crops)
  return [dataclasses.replace(video, crops=video.crops[f:f + 1]) for f in range(video.num_crops)]


def sample_visuals(images: Sequence[Image.Image], config: LLaDAVConfig) -> list[Visual]:
  """Upstream's training rule for a sample's images: anyres for one image, square padding for several."""
  multi = len(images) > 1
  return [image_visual(image, config, multi_image=multi) for image in images]


def inference_visuals(images: Sequence[Image.Image], config: LLaDAVConfig) -> list[Visual]:
  """Upstream's evaluation rule (lmms-eval llava_onevision_llada): one image with an anyres aspect
  ratio as in training; several images padded to squares, one image padded ("pad") or resized
  ("square"), each encoded as one plain crop of `num_patches` tokens."""
  if len(images) == 1 and config.is_anyres:
    return [anyres_visual(images[0], config)]
  size = config.vision.image_size
  pad = len(images) > 1 or config.image_aspect_ratio == "pad"
  return [Visual(KIND_PLAIN, preprocess_crop(pad_to_square(image) if pad else image, size)[None], image.size)
          for image in images]

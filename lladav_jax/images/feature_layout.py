"""Where each image token's feature comes from: a host-computed layout, one per visual.

Upstream packs projected crop features with reshapes, unpadding slices, bilinear resizes, pooling
and image-newline concatenation. All of these are linear in the features, so each output token is
a weighted sum of at most four crop-feature vectors (or the newline vector). The host computes the
indices and weights (`FeatureLayout`); the device does one gather and a weighted sum, with static
shapes. Token counts are exactly upstream's.
"""

import dataclasses
import math

import numpy as np

from lladav_jax.images.crops import KIND_ANYRES, KIND_PLAIN, KIND_SINGLE, KIND_VIDEO, Visual
from lladav_jax.model_config import LLaDAVConfig

TAPS = 4  # bilinear interpolation reads 2x2 neighbours
NEWLINE = -1  # index of the image-newline vector in a layout (resolved when a batch is built)


@dataclasses.dataclass(frozen=True)
class FeatureLayout:
  """index: int32 [T, TAPS] into this visual's crop features (crop * tokens_per_crop + token) or
  NEWLINE; weight: float32 [T, TAPS]. Unused taps have weight 0."""

  index: np.ndarray
  weight: np.ndarray

  @property
  def num_tokens(self) -> int:
    return int(self.index.shape[0])


def bilinear_taps(in_size: int, out_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """Source indices and weights of a 1-D linear resize with torch's bilinear conventions
  (align_corners=False, no antialias, edges clamped): returns (i0, i1, w0, w1), each [out_size].

  Computed in float32 like torch's CPU kernel; torch may fuse the multiply-add, so its weights can
  still differ by about one float32 ulp of the source coordinate (~1e-5 for ~100-row grids).
  """
  scale = np.float32(in_size) / np.float32(out_size)
  dst = np.arange(out_size, dtype=np.float32)
  src = np.maximum(scale * (dst + np.float32(0.5)) - np.float32(0.5), np.float32(0.0))
  i0 = np.minimum(src.astype(np.int64), in_size - 1)
  i1 = np.minimum(i0 + 1, in_size - 1)
  w1 = (src - i0.astype(np.float32)).astype(np.float32)
  return i0, i1, np.float32(1.0) - w1, w1


def _identity_taps(size: int):
  idx = np.arange(size)
  zeros = np.zeros(size, np.float32)
  return idx, idx, np.ones(size, np.float32), zeros


def _pool_taps(size: int, mode: str):
  """2x2 pooling of one axis: bilinear to ceil(size/2) or average to floor(size/2) (upstream)."""
  if mode == "bilinear":
    return bilinear_taps(size, math.ceil(size / 2))
  idx = np.arange(size // 2) * 2
  half = np.full(size // 2, 0.5, np.float32)
  return idx, idx + 1, half, half


class _Grid:
  """A 2-D feature map addressed through a function (row, col) -> flat feature index."""

  def __init__(self, rows: int, cols: int, source):
    self.rows, self.cols, self.source = rows, cols, source

  def resample(self, row_taps, col_taps) -> tuple[np.ndarray, np.ndarray]:
    """Index/weight [out_rows, out_cols, TAPS] from separable 1-D taps."""
    r0, r1, rw0, rw1 = row_taps
    c0, c1, cw0, cw1 = col_taps
    rr = np.stack([r0, r0, r1, r1], -1)[:, None, :]
    cc = np.stack([c0, c1, c0, c1], -1)[None, :, :]
    rw = np.stack([rw0, rw0, rw1, rw1], -1)[:, None, :]
    cw = np.stack([cw0, cw1, cw0, cw1], -1)[None, :, :]
    rr, cc = np.broadcast_arrays(rr, cc)
    return self.source(rr, cc).astype(np.int32), (rw * cw).astype(np.float32)


def _rows_with_newline(index: np.ndarray, weight: np.ndarray, newline: bool) -> FeatureLayout:
  """Flattens [rows, cols, TAPS] row by row, appending a newline token after every row if asked."""
  rows = index.shape[0]
  if newline:
    nl_index = np.full((rows, 1, TAPS), NEWLINE, np.int32)
    nl_weight = np.zeros((rows, 1, TAPS), np.float32)
    nl_weight[..., 0] = 1.0
    index = np.concatenate([index, nl_index], axis=1)
    weight = np.concatenate([weight, nl_weight], axis=1)
  return FeatureLayout(index.reshape(-1, TAPS), weight.reshape(-1, TAPS))


def _concat(*layouts: FeatureLayout) -> FeatureLayout:
  return FeatureLayout(np.concatenate([l.index for l in layouts]), np.concatenate([l.weight for l in layouts]))


def _newline_token() -> FeatureLayout:
  weight = np.zeros((1, TAPS), np.float32)
  weight[0, 0] = 1.0
  return FeatureLayout(np.full((1, TAPS), NEWLINE, np.int32), weight)


def _crop_tokens(crop: int, side: int) -> FeatureLayout:
  """A crop's tokens as they are, row-major."""
  grid = _Grid(side, side, lambda r, c: crop * side * side + r * side + c)
  index, weight = grid.resample(_identity_taps(side), _identity_taps(side))
  return _rows_with_newline(index, weight, newline=False)


def unpadded_region(image_size: tuple[int, int], rows: int, cols: int) -> tuple[int, int, int, int]:
  """Rows [r0, r1) and columns [c0, c1) of a padded feature grid that hold the image, with
  upstream's integer truncation (an odd padding leaves one extra row or column)."""
  width, height = image_size
  if width / height > cols / rows:
    new_rows = int(height * (cols / width))
    pad = (rows - new_rows) // 2
    return pad, rows - pad, 0, cols
  new_cols = int(width * (rows / height))
  pad = (cols - new_cols) // 2
  return 0, rows, pad, cols - pad


def anyres_layout(image_size: tuple[int, int], grid: tuple[int, int], side: int,
                  max_tiles: int | None, newline: bool) -> FeatureLayout:
  """Base crop's tokens, then the tiles reassembled, unpadded, downsampled above the anyres_max
  budget, with a newline after every row."""
  grid_cols, grid_rows = grid
  tokens = side * side

  def tile_source(r, c):
    tile = (r // side) * grid_cols + (c // side)
    return (1 + tile) * tokens + (r % side) * side + (c % side)

  r0, r1, c0, c1 = unpadded_region(image_size, grid_rows * side, grid_cols * side)
  height, width = r1 - r0, c1 - c0
  region = _Grid(height, width, lambda r, c: tile_source(r + r0, c + c0))
  row_taps, col_taps = _identity_taps(height), _identity_taps(width)
  if max_tiles is not None:
    times = math.sqrt(height * width / (max_tiles * side ** 2))
    if times > 1.1:
      row_taps = bilinear_taps(height, int(height // times))
      col_taps = bilinear_taps(width, int(width // times))
  index, weight = region.resample(row_taps, col_taps)
  return _concat(_crop_tokens(0, side), _rows_with_newline(index, weight, newline))


def video_layout(num_frames: int, side: int, pool_mode: str, newline_position: str,
                 newline: bool) -> FeatureLayout:
  """Each frame pooled 2x2, then image-newline tokens placed per `newline_position`."""
  taps = _pool_taps(side, pool_mode)
  frames = []
  for f in range(num_frames):
    grid = _Grid(side, side, lambda r, c, f=f: f * side * side + r * side + c)
    frames.append(grid.resample(taps, taps))
  if not newline or newline_position == "no_token":
    return _concat(*[_rows_with_newline(i, w, False) for i, w in frames])
  if newline_position == "grid":
    return _concat(*[_rows_with_newline(i, w, True) for i, w in frames])
  if newline_position == "frame":
    return _concat(*[_concat(_rows_with_newline(i, w, False), _newline_token()) for i, w in frames])
  # one_token
  return _concat(*[_rows_with_newline(i, w, False) for i, w in frames], _newline_token())


def visual_layout(visual: Visual, config: LLaDAVConfig) -> FeatureLayout:
  """The layout of one visual's tokens, in the order they enter the sequence."""
  side = config.vision.patches_per_side
  newline = config.uses_image_newline
  if visual.kind == KIND_VIDEO:
    pool_mode = visual.pool_mode or config.spatial_pool_mode
    return video_layout(visual.num_crops, side, pool_mode, config.newline_position, newline)
  if visual.kind == KIND_PLAIN:
    return _crop_tokens(0, side)
  if config.patch_merge_type == "flat":
    return _concat(*[_crop_tokens(c, side) for c in range(visual.num_crops)])
  if visual.kind == KIND_SINGLE:
    layout = _crop_tokens(0, side)
    return _concat(layout, _newline_token()) if newline else layout
  if visual.kind == KIND_ANYRES:
    if visual.grid is None or visual.num_crops != 1 + visual.grid[0] * visual.grid[1]:
      raise ValueError(f"anyres visual with grid {visual.grid} has {visual.num_crops} crops")
    return anyres_layout(visual.image_size, visual.grid, side, config.anyres_max_tiles, newline)
  raise ValueError(f"unknown visual kind {visual.kind!r}")

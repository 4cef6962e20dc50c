"""Decoding images into RGB PIL images, with errors that name the file."""

import io
import os

import numpy as np
from PIL import Image, UnidentifiedImageError


class ImageDecodeError(ValueError):
  """An image file could not be read or decoded."""


class ImageNotFoundError(ImageDecodeError):
  """The image file does not exist."""


class ImageTooLargeError(ImageDecodeError):
  """The image has more pixels than allowed (a decompression bomb, or simply too big to decode)."""


def to_rgb(image: Image.Image) -> Image.Image:
  """RGB conversion as upstream does it (`convert("RGB")`: palette expanded, alpha dropped, CMYK
  converted), except that 16/32-bit greyscale is rescaled to 8 bits instead of being clipped."""
  if image.mode == "RGB":
    return image
  if image.mode in ("I;16", "I;16B", "I;16L", "I"):
    array = np.asarray(image, dtype=np.float64)
    peak = 65535.0 if image.mode.startswith("I;16") or array.max() > 255 else 255.0
    array = np.clip(np.round(array / peak * 255.0), 0, 255).astype(np.uint8)
    return Image.fromarray(array).convert("RGB")
  return image.convert("RGB")


def load_image(source: str | os.PathLike | bytes, max_pixels: int | None = None) -> Image.Image:
  """Reads an image from a path or raw bytes and returns it decoded as RGB.

  The pixel count is checked from the header, before anything is decoded: above `max_pixels`, or
  above PIL's own decompression-bomb limit (2 * Image.MAX_IMAGE_PIXELS) when it is None, the image is
  refused with ImageTooLargeError.
  """
  name = "<bytes>" if isinstance(source, bytes) else os.fspath(source)
  try:
    with (io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")) as f:
      image = Image.open(f)  # reads the header only
      too_large = max_pixels is not None and image.width * image.height > max_pixels
      if not too_large:
        image.load()
  except FileNotFoundError as e:
    raise ImageNotFoundError(f"image file not found: {name}") from e
  except Image.DecompressionBombError as e:
    raise ImageTooLargeError(f"image {name} is too large to decode: {e}") from e
  except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
    raise ImageDecodeError(f"cannot decode image {name}: {e}") from e
  if too_large:
    raise ImageTooLargeError(f"image {name} has {image.width}x{image.height} pixels, more than the limit of "
                             f"{max_pixels}")
  if image.width < 1 or image.height < 1:
    raise ImageDecodeError(f"image {name} has an empty size {image.size}")
  return to_rgb(image)

"""The frozen base of QLoRA, quantised: int8 or 4-bit NormalFloat codes with blockwise absmax scales.

A kernel [..., in, out] is cut into blocks of `block` consecutive inputs per output column (block 0:
the whole input axis, one scale per output channel). Each block keeps its largest magnitude as the
float32 scale and stores w / scale as a code: int8 rounds it to 127 steps; "nf4" picks the nearest
of the 16 NormalFloat levels (QLoRA, Dettmers et al. 2023, appendix E: quantiles of a normal
distribution scaled to [-1, 1], zero included) and packs two codes per byte along the input axis.
Leading axes (a scanned layer stack) are kept. Dequantising is a lookup and a multiply, done where
the kernel is used, so the float kernel of one layer exists only inside its matmul.
"""

import jax
import jax.numpy as jnp

QUANTIZATIONS = ("none", "int8", "nf4")
CODE_DTYPES = {"int8": jnp.int8, "nf4": jnp.uint8}
NF4_LEVELS = (-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
              -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
              0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
              0.7229568362236023, 1.0)


def block_size(block: int, fan_in: int) -> int:
  """Inputs per scale; `block` 0 means the whole input axis."""
  return fan_in if block == 0 else block


def stored_shapes(kind: str, block: int, fan_in: int, features: int) -> tuple[tuple[int, int], tuple[int, int]]:
  """(codes shape, scale shape) of one [fan_in, features] kernel."""
  size = block_size(block, fan_in)
  if fan_in % size or (kind == "nf4" and size % 2):
    raise ValueError(f"a kernel with {fan_in} inputs cannot be cut into {kind} blocks of {size} "
                     f"(lora.quantization_block must divide it{' and be even' if kind == 'nf4' else ''})")
  codes_rows = fan_in // 2 if kind == "nf4" else fan_in
  return (codes_rows, features), (fan_in // size, features)


def _blocks(x: jax.Array, size: int) -> jax.Array:
  """[..., in, out] -> [..., in / size, size, out]."""
  return x.reshape(x.shape[:-2] + (x.shape[-2] // size, size, x.shape[-1]))


def quantize(kernel: jax.Array, kind: str, block: int) -> tuple[jax.Array, jax.Array]:
  """kernel [..., in, out] -> (codes, float32 scales [..., in / block, out])."""
  fan_in = kernel.shape[-2]
  stored_shapes(kind, block, fan_in, kernel.shape[-1])  # validates the block
  size = block_size(block, fan_in)
  blocks = _blocks(kernel.astype(jnp.float32), size)
  scale = jnp.max(jnp.abs(blocks), axis=-2)
  scale = jnp.where(scale > 0, scale, 1.0)
  normed = blocks / scale[..., None, :]
  if kind == "int8":
    codes = jnp.clip(jnp.round(normed * 127.0), -127, 127).astype(jnp.int8).reshape(kernel.shape)
    return codes, scale
  levels = jnp.asarray(NF4_LEVELS, jnp.float32)
  codes = jnp.argmin(jnp.abs(normed[..., None] - levels), axis=-1).astype(jnp.uint8).reshape(kernel.shape)
  packed = codes[..., 0::2, :] | (codes[..., 1::2, :] << 4)
  return packed, scale


def dequantize(codes: jax.Array, scale: jax.Array, kind: str, dtype) -> jax.Array:
  """(codes, scales) -> kernel [..., in, out] in `dtype`."""
  if kind == "int8":
    values = codes.astype(jnp.float32) / 127.0
  else:
    low, high = codes & 15, codes >> 4
    nibbles = jnp.stack([low, high], axis=-2)  # [..., in / 2, 2, out]: rows 2i and 2i + 1
    nibbles = nibbles.reshape(codes.shape[:-2] + (2 * codes.shape[-2], codes.shape[-1]))
    values = jnp.asarray(NF4_LEVELS, jnp.float32)[nibbles.astype(jnp.int32)]
  size = values.shape[-2] // scale.shape[-2]
  kernel = _blocks(values, size) * scale[..., None, :]
  return kernel.reshape(values.shape).astype(dtype)

"""LoRA adapters on the towers' linear layers, over a frozen base that may be quantised (QLoRA).

An adapted layer computes y = x W (+ b) + (alpha / rank) * dropout(x) A B, as PEFT's LoRA does: A
[in, rank] starts uniform in +-1/sqrt(in) (torch's Linear init, PEFT's kaiming_uniform(a=sqrt(5))),
B [rank, out] starts at zero, so a fresh adapter leaves the base model's output unchanged. The base
keeps its names (`kernel`, `bias`), so checkpoints and the key map still fit; the adapter adds
`lora_a` and `lora_b` beside them, sharded like the kernel's input and output axes. With a quantised
base `kernel` holds the codes (sharded as the kernel) and `kernel_scale` the scales (split over the
output axis; models/quantization.py). Adapters are
float32 whatever the base's dtype. Dropout runs only when the caller passes a "dropout" rng (the
train step), so generation and evaluation are deterministic.
"""

import dataclasses
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lladav_jax.models import quantization

LANGUAGE_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
VISION_MODULES = ("q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2")
ADAPTER_LEAVES = ("lora_a", "lora_b")
# The top of a parameter path -> the tower whose targets apply (the optimiser's component names).
TOWERS = {"language_model": "language", "vision_tower": "vision", "mm_projector": "projector"}


@dataclasses.dataclass(frozen=True)
class LoraConfig:
  """Which linear layers get adapters, their size, and how the frozen base is stored."""

  rank: int = 16
  alpha: float = 32.0  # the update is scaled by alpha / rank
  dropout: float = 0.0  # on the adapter's input, during training
  targets: tuple[str, ...] = LANGUAGE_MODULES  # language-tower layers (LANGUAGE_MODULES)
  vision_targets: tuple[str, ...] = ()  # vision-tower layers (VISION_MODULES)
  projector: bool = False  # every linear layer of the projector
  base_quantization: str = "none"  # the adapted layers' frozen kernels: models.quantization.QUANTIZATIONS
  quantization_block: int = 0  # inputs per scale; 0: one scale per output channel

  def __post_init__(self):
    object.__setattr__(self, "targets", tuple(self.targets))
    object.__setattr__(self, "vision_targets", tuple(self.vision_targets))
    for name, values, choices in (("targets", self.targets, LANGUAGE_MODULES),
                                  ("vision_targets", self.vision_targets, VISION_MODULES)):
      unknown = sorted(set(values) - set(choices))
      if unknown:
        raise ValueError(f"lora.{name} names unknown layers {unknown}; choices: {choices}")
    if not (self.targets or self.vision_targets or self.projector):
      raise ValueError("lora: no layer to adapt (lora.targets, lora.vision_targets and lora.projector are all empty)")
    if not isinstance(self.rank, int) or self.rank < 1:
      raise ValueError(f"lora.rank = {self.rank!r}; a positive integer")
    if not 0.0 <= self.dropout < 1.0:
      raise ValueError(f"lora.dropout = {self.dropout!r}; a probability in [0, 1)")
    if self.base_quantization not in quantization.QUANTIZATIONS:
      raise ValueError(f"lora.base_quantization = {self.base_quantization!r}; choices: {quantization.QUANTIZATIONS}")
    if not isinstance(self.quantization_block, int) or self.quantization_block < 0:
      raise ValueError(f"lora.quantization_block = {self.quantization_block!r}; a number of inputs >= 0")

  @property
  def scaling(self) -> float:
    return self.alpha / self.rank

  def adapts(self, tower: str, module: str) -> bool:
    """Whether layer `module` of `tower` ("language", "vision", "projector") gets an adapter."""
    if tower == "language":
      return module in self.targets
    if tower == "vision":
      return module in self.vision_targets
    return tower == "projector" and self.projector

  def adapts_path(self, path: Sequence[str]) -> bool:
    """Whether the parameter path (e.g. ("language_model", "layers", "self_attn", "q_proj", "kernel"))
    lies in an adapted layer."""
    return len(path) >= 2 and path[0] in TOWERS and self.adapts(TOWERS[path[0]], path[-2])


def is_adapter(path: Sequence[str]) -> bool:
  return path[-1] in ADAPTER_LEAVES


def torch_linear_uniform(key, shape, dtype=jnp.float32):
  """U(+-1/sqrt(fan_in)) with fan_in the second-to-last axis (PEFT's lora_A init)."""
  bound = shape[-2] ** -0.5
  return jax.random.uniform(key, shape, dtype, -bound, bound)


class AdaptedDense(nn.Module):
  """nn.Dense's computation and parameter names, plus an adapter (and a quantised kernel)."""

  features: int
  axes: tuple[str, str]
  use_bias: bool
  dtype: jnp.dtype
  param_dtype: jnp.dtype
  kernel_init: nn.initializers.Initializer
  bias_init: nn.initializers.Initializer
  lora: LoraConfig

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    fan_in, lora = x.shape[-1], self.lora
    in_axis, out_axis = self.axes
    kind = lora.base_quantization
    if kind == "none":
      kernel = self.param("kernel", nn.with_logical_partitioning(self.kernel_init, self.axes),
                          (fan_in, self.features), self.param_dtype)
    else:  # the codes are read from a checkpoint (quantised at load); a random init is only a shape
      codes_shape, scale_shape = quantization.stored_shapes(kind, lora.quantization_block, fan_in, self.features)
      codes = self.param("kernel", nn.with_logical_partitioning(nn.initializers.zeros_init(), self.axes),
                         codes_shape, quantization.CODE_DTYPES[kind])
      # The block axis is short (e.g. 1152 / 64 = 18 for the projector) and need not divide the mesh:
      # scales are split over the output axis only.
      scale = self.param("kernel_scale", nn.with_logical_partitioning(nn.initializers.ones_init(), (None, out_axis)),
                         scale_shape, jnp.float32)
      kernel = quantization.dequantize(codes, scale, kind, self.dtype)
    bias = (self.param("bias", nn.with_logical_partitioning(self.bias_init, (out_axis,)), (self.features,),
                       self.param_dtype) if self.use_bias else None)
    lora_a = self.param("lora_a", nn.with_logical_partitioning(torch_linear_uniform, (in_axis, None)),
                        (fan_in, lora.rank), jnp.float32)
    lora_b = self.param("lora_b", nn.with_logical_partitioning(nn.initializers.zeros_init(), (None, out_axis)),
                        (lora.rank, self.features), jnp.float32)
    inputs, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    contract = (((inputs.ndim - 1,), (0,)), ((), ()))
    y = jax.lax.dot_general(inputs, kernel, contract)
    if bias is not None:
      y = y + bias
    adapter_in = inputs
    if lora.dropout > 0 and self.has_rng("dropout"):
      adapter_in = nn.Dropout(lora.dropout)(inputs, deterministic=False)
    low = jax.lax.dot_general(adapter_in, lora_a.astype(self.dtype), contract)
    update = jax.lax.dot_general(low, lora_b.astype(self.dtype), contract)
    return y + (update * lora.scaling).astype(y.dtype)


def quantize_base(params: dict, lora: LoraConfig) -> dict:
  """A float params tree (flattened: path -> array) with every adapted layer's `kernel` replaced by
  its codes and a `kernel_scale` beside it, as `AdaptedDense` reads them. Other leaves are kept."""
  if lora.base_quantization == "none":
    return dict(params)
  out = {}
  for path, value in params.items():
    if path[-1] == "kernel" and lora.adapts_path(path):
      codes, scale = quantization.quantize(value, lora.base_quantization, lora.quantization_block)
      out[path], out[path[:-1] + ("kernel_scale",)] = codes, scale
    else:
      out[path] = value
  return out

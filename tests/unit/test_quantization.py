"""The quantised base of QLoRA against a NumPy re-statement (blockwise absmax, int8 rounding, nearest
NormalFloat level), the NF4 table against its construction from normal quantiles, each tensor's
reconstruction error, and the adapted layers reading the codes as the dequantised kernel."""

import dataclasses
import functools

import jax
import numpy as np
import pytest
import torch
from flax import traverse_util

from lladav_jax.models import quantization
from lladav_jax.models.llada import LLaDAModel, default_positions
from lladav_jax.models.lora import LoraConfig, quantize_base
from tests import tiny
from tests.parity.test_llada_parity import _ours

# Relative Frobenius error ||W - Q(W)|| / ||W|| of the tiny Llama's kernels (normal weights), measured:
# int8 per channel 0.51-0.57%, int8 blocks of 16 0.44-0.48%, nf4 blocks of 16 7.7-8.3%. The bounds are
# those plus a margin.
BOUNDS = {("int8", 0): 0.01, ("int8", 16): 0.008, ("nf4", 16): 0.1}


def numpy_dequantized(w, kind, block):
  """Blockwise absmax per output column over `block` inputs (0: all), as the QLoRA paper describes."""
  fan_in, out = w.shape
  size = fan_in if block == 0 else block
  blocks = w.astype(np.float64).reshape(fan_in // size, size, out)
  scale = np.abs(blocks).max(axis=1, keepdims=True)
  normed = blocks / scale
  if kind == "int8":
    values = np.round(normed * 127) / 127
  else:
    levels = np.asarray(quantization.NF4_LEVELS)
    values = levels[np.abs(normed[..., None] - levels).argmin(-1)]
  return (values * scale).reshape(fan_in, out)


def test_nf4_levels_are_normal_quantiles():
  """QLoRA's construction: 8 quantiles of N(0, 1) for the positive half, 7 for the negative, zero,
  each half normalised by its largest (the offset keeps the extreme quantile finite)."""
  normal = torch.distributions.Normal(0.0, 1.0)
  offset = 0.9677083
  positive = normal.icdf(torch.linspace(offset, 0.5, 9, dtype=torch.float64)[:-1])
  negative = -normal.icdf(torch.linspace(offset, 0.5, 8, dtype=torch.float64)[:-1])
  levels = torch.sort(torch.cat([positive, torch.zeros(1, dtype=torch.float64), negative])).values
  levels = levels / levels.abs().max()
  np.testing.assert_allclose(quantization.NF4_LEVELS, levels.numpy(), atol=1e-6)


@functools.lru_cache(maxsize=None)
def llama_params(scan: bool) -> dict:
  """The tiny Llama's weights in our layout: flattened {path: array}."""
  _, variables = _ours(tiny.TEXT, tiny.hf_llama(tiny.TEXT), tiny.F32 if scan else tiny.F32_LOOP)
  return traverse_util.flatten_dict(jax.device_get(variables["params"]))


def kernels():
  flat = llama_params(scan=False)
  return {"/".join(k): np.asarray(v) for k, v in flat.items() if k[-1] == "kernel" and "lm_head" not in k}


@pytest.mark.parametrize("kind,block", list(BOUNDS), ids=[f"{k}-{b}" for k, b in BOUNDS])
def test_reconstruction_error_per_tensor(kind, block):
  errors = {}
  for name, w in kernels().items():
    codes, scale = quantization.quantize(w, kind, block)
    assert codes.dtype == quantization.CODE_DTYPES[kind]
    assert codes.shape == quantization.stored_shapes(kind, block, *w.shape)[0]
    got = np.asarray(quantization.dequantize(codes, scale, kind, np.float32))
    np.testing.assert_allclose(got, numpy_dequantized(w, kind, block), rtol=1e-6, atol=1e-7, err_msg=name)
    errors[name] = float(np.linalg.norm(got - w) / np.linalg.norm(w))
  print(kind, block, {k: round(v, 4) for k, v in errors.items()})
  assert max(errors.values()) < BOUNDS[kind, block], errors
  assert min(errors.values()) > 0


def test_stacked_kernels_quantise_layer_by_layer():
  w = np.random.default_rng(0).normal(size=(3, 32, 8)).astype(np.float32)
  codes, scale = quantization.quantize(w, "nf4", 8)
  assert codes.shape == (3, 16, 8) and scale.shape == (3, 4, 8)
  whole = np.asarray(quantization.dequantize(codes, scale, "nf4", np.float32))
  for layer in range(3):
    np.testing.assert_array_equal(whole[layer], numpy_dequantized(w[layer], "nf4", 8).astype(np.float32))


def test_blocks_that_do_not_divide_are_refused():
  with pytest.raises(ValueError, match="lora.quantization_block must divide it and be even"):
    quantization.stored_shapes("nf4", 5, 30, 4)


@pytest.mark.parametrize("kind", ["int8", "nf4"])
def test_adapted_layers_compute_with_the_dequantised_kernels(kind):
  lora = LoraConfig(rank=2, base_quantization=kind, quantization_block=16)
  flat = llama_params(scan=True)
  tower = quantize_base({("language_model",) + p: v for p, v in flat.items()}, lora)
  quantised = {p[1:]: v for p, v in tower.items()}
  dequantised = dict(flat)  # the float model whose adapted kernels are the dequantised codes
  for path in flat:
    if path[-1] == "kernel" and path[-2] in lora.targets:
      dequantised[path] = quantization.dequantize(quantised[path], quantised[path[:-1] + ("kernel_scale",)], kind,
                                                  np.float32)
  rng = np.random.default_rng(0)
  for path in list(quantised):
    if path[-1] == "kernel" and path[-2] in lora.targets:
      module = path[:-1]
      quantised[module + ("lora_a",)] = rng.normal(0, 0.3, flat[path].shape[:2] + (2,)).astype(np.float32)
      quantised[module + ("lora_b",)] = np.zeros((flat[path].shape[0], 2, flat[path].shape[-1]), np.float32)
  ids = rng.integers(0, tiny.TEXT.vocab_size, (2, 9))

  def logits(model, params):
    variables = {"params": traverse_util.unflatten_dict(params)}
    embeds = model.apply(variables, ids, method=LLaDAModel.embed)
    return np.asarray(model.apply(variables, embeds, default_positions(2, 9), None))

  adapted = LLaDAModel(tiny.TEXT, dataclasses.replace(tiny.F32, lora=lora))
  got = logits(adapted, quantised)
  np.testing.assert_allclose(got, logits(LLaDAModel(tiny.TEXT, tiny.F32), dequantised), rtol=1e-6, atol=1e-6)
  assert np.abs(got - logits(LLaDAModel(tiny.TEXT, tiny.F32), flat)).max() > 1e-4, "quantising must show"

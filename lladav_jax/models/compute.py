"""How the modules compute, independent of the checkpoint: dtypes, layer scan, remat, attention, loss chunks.

The remat policies are looked up here by name, so the config's choices and the policies are one table.
"""

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp

from lladav_jax.models.lora import LoraConfig

# Remat policies by name. "minimal" keeps matmul outputs without batch dims (weights-stationary),
# "save_attention" keeps the tagged projections and attention output (see models/llada.py).
REMAT_POLICIES: dict[str, Callable | None] = {
    "none": None,
    "full": jax.checkpoint_policies.nothing_saveable,
    "minimal": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "save_attention": jax.checkpoint_policies.save_only_these_names(
        "query_proj", "key_proj", "value_proj", "attention_out"),
}
# "xla": plain einsums (portable, materialises the scores); "blockwise": flash-style attention in plain
# JAX (every backend); "chunked": query chunks with the exact softmax (fast on CPU); "splash": the TPU
# Pallas kernel (no dialogue-causal mask); "cudnn": the fused GPU kernel. models/attention.py says what
# each takes.
ATTENTION_IMPLS = ("xla", "blockwise", "chunked", "splash", "cudnn")
DTYPES = ("float32", "bfloat16", "float16")


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
  """Activation and parameter dtypes, whether layers are one `nn.scan`, remat, attention, how the
  training loss applies the LM head, and the LoRA adapters."""

  dtype: str = "float32"  # activations
  param_dtype: str = "float32"
  scan_layers: bool = True
  remat_policy: str = "none"
  attention_impl: str = "xla"
  # Positions per chunk when the training loss runs the LM head and the cross-entropy chunk by chunk
  # (lladav_jax/diffusion/loss.py), so that [B, L, vocab] float32 logits never exist; 0: full logits.
  loss_chunk: int = 0
  # Adapters on the towers' linear layers over a frozen (possibly quantised) base; None: none (models/lora.py).
  lora: LoraConfig | None = None

  def __post_init__(self):
    for name, value, choices in (("dtype", self.dtype, DTYPES),
                                 ("param_dtype", self.param_dtype, DTYPES),
                                 ("remat_policy", self.remat_policy, tuple(REMAT_POLICIES)),
                                 ("attention_impl", self.attention_impl, ATTENTION_IMPLS)):
      if value not in choices:
        raise ValueError(f"compute.{name} = {value!r}; choices: {choices}")
    if not isinstance(self.loss_chunk, int) or self.loss_chunk < 0:
      raise ValueError(f"compute.loss_chunk = {self.loss_chunk!r}; a number of positions >= 0 (0: full logits)")

  @property
  def activation_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def weight_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)


def inference_compute(dtype: str) -> ComputeConfig:
  """How decoding computes in `dtype` (weights and activations): layers scanned, and on CPU the "chunked"
  attention, which bench/forward.py measures as the fastest there; "xla" elsewhere."""
  impl = "chunked" if jax.default_backend() == "cpu" else "xla"
  return ComputeConfig(dtype=dtype, param_dtype=dtype, scan_layers=True, attention_impl=impl)

"""Building blocks shared by the towers: partitioned dense/norm layers, RoPE, remat, layer stacks."""

import functools
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from lladav_jax import sharding
from lladav_jax.models.compute import REMAT_POLICIES
from lladav_jax.models.lora import AdaptedDense, LoraConfig

Dtype = jnp.dtype


def dense(features: int, axes: tuple[str, str], *, name: str, use_bias: bool, dtype: Dtype,
          param_dtype: Dtype, stddev: float = 0.02, kernel_init=None, bias_init=None,
          float32_output: bool = False, lora: LoraConfig | None = None, tower: str = "") -> nn.Module:
  """A Dense layer whose kernel [in, out] and bias [out] carry logical axis names.

  Default init: kernel normal(stddev) (LLaMA's), bias zeros; pass initializers to change them.
  `float32_output`: the matmul accumulates and returns float32 whatever `dtype` its inputs have.
  With `lora` adapting layer `name` of `tower`, the layer is models.lora.AdaptedDense (same names).
  """
  if lora is not None and lora.adapts(tower, name):
    return AdaptedDense(features, axes, use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                        kernel_init=kernel_init or nn.initializers.normal(stddev),
                        bias_init=bias_init or nn.initializers.zeros_init(), lora=lora, name=name)
  dot_general = functools.partial(jax.lax.dot_general, preferred_element_type=jnp.float32) if float32_output else None
  return nn.Dense(
      features,
      use_bias=use_bias,
      dtype=dtype,
      param_dtype=param_dtype,
      kernel_init=nn.with_logical_partitioning(kernel_init or nn.initializers.normal(stddev), axes),
      bias_init=nn.with_logical_partitioning(bias_init or nn.initializers.zeros_init(), (axes[1],)),
      dot_general=dot_general,
      name=name,
  )


# torch.nn.Linear's default init (kaiming_uniform(a=sqrt(5)) weights, U(+-1/sqrt(fan_in)) bias):
# what upstream's freshly built projector starts from.
TORCH_LINEAR_KERNEL_INIT = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")


def torch_linear_bias_init(fan_in: int):
  bound = fan_in ** -0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


class Embed(nn.Module):
  """Token embedding [vocab, embed]. For the lookup the table is gathered over the embed axis
  (as FSDP does for every weight) and stays split over vocab: rows are fetched where they live."""

  num_embeddings: int
  features: int
  dtype: Dtype
  param_dtype: Dtype
  stddev: float = 0.02

  @nn.compact
  def __call__(self, ids: jax.Array) -> jax.Array:
    table = self.param("embedding", nn.with_logical_partitioning(nn.initializers.normal(self.stddev),
                                                                 (sharding.VOCAB, sharding.EMBED)),
                       (self.num_embeddings, self.features), self.param_dtype)
    table = constrain(jnp.asarray(table, self.dtype), (sharding.VOCAB, None))
    return jnp.take(table, ids, axis=0)


class RMSNorm(nn.Module):
  """RMSNorm computed in float32, cast back, then scaled (the LLaMA/LLaDA order of operations)."""

  eps: float
  dtype: Dtype
  param_dtype: Dtype

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    scale = self.param("scale", nn.with_logical_partitioning(nn.initializers.ones_init(), (sharding.NORM,)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(jnp.square(x32), axis=-1, keepdims=True) + self.eps)
    return (jnp.asarray(scale, self.dtype) * normed.astype(x.dtype)).astype(self.dtype)


def layer_norm(eps: float, *, name: str, dtype: Dtype, param_dtype: Dtype) -> nn.LayerNorm:
  return nn.LayerNorm(
      epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
      scale_init=nn.with_logical_partitioning(nn.initializers.ones_init(), (sharding.NORM,)),
      bias_init=nn.with_logical_partitioning(nn.initializers.zeros_init(), (sharding.NORM,)))


def rotary_cos_sin(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """cos/sin tables [B, L, head_dim] for rotate-half RoPE, computed in float32."""
  exponents = jnp.arange(0, head_dim, 2, dtype=jnp.int32).astype(jnp.float32) / head_dim
  inv_freq = 1.0 / (theta ** exponents)
  freqs = positions.astype(jnp.float32)[..., None] * inv_freq
  emb = jnp.concatenate([freqs, freqs], axis=-1)
  return jnp.cos(emb), jnp.sin(emb)


def apply_rotary(x: jax.Array, cos: jax.Array, sin: jax.Array) -> jax.Array:
  """x: [B, L, H, Dh]; cos/sin: [B, L, Dh]. Rotate-half form, so HF q/k weights need no permute."""
  half = x.shape[-1] // 2
  rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
  cos = cos[:, :, None, :].astype(x.dtype)
  sin = sin[:, :, None, :].astype(x.dtype)
  return x * cos + rotated * sin


def tag(x: jax.Array, name: str) -> jax.Array:
  """Names an intermediate so that a remat policy can choose to keep it."""
  return checkpoint_name(x, name)


def stack_layers(block_cls: type[nn.Module], *, num_layers: int, scan: bool, remat_policy: str,
                 broadcast_args: int, name: str, collect_outputs: bool = False, per_layer_args: int = 0,
                 **block_kwargs):
  """Returns a callable (x, *broadcast, *per_layer) -> (x, per-layer outputs or None).

  The block's signature is `block(x, *broadcast, *per_layer) -> (x, y)`; with `scan` the layers share
  one traced body and their params get a leading "layers" axis; otherwise they are `{name}_{i}`.
  The last `per_layer_args` arguments are pytrees (or None) with a leading layer axis: layer i gets
  slice i (e.g. a key/value cache).
  """
  if remat_policy != "none":
    block_cls = nn.remat(block_cls, policy=REMAT_POLICIES[remat_policy], prevent_cse=not scan)
  if scan:
    scanned = nn.scan(
        block_cls,
        variable_axes={"params": 0},
        split_rngs={"params": True, "dropout": True},
        in_axes=(nn.broadcast,) * broadcast_args + (0,) * per_layer_args,
        length=num_layers,
        metadata_params={nn.PARTITION_NAME: sharding.LAYERS},
    )(name=name, **block_kwargs)

    def run_scanned(x, *args):
      x, ys = scanned(x, *args)
      return x, (ys if collect_outputs else None)
    return run_scanned

  blocks = [block_cls(name=f"{name}_{i}", **block_kwargs) for i in range(num_layers)]

  def run_loop(x, *args):
    shared, per_layer = args[:broadcast_args], args[broadcast_args:]
    outputs = []
    for i, block in enumerate(blocks):
      x, y = block(x, *shared, *jax.tree_util.tree_map(lambda a: a[i], per_layer))
      outputs.append(y)
    if not collect_outputs or not outputs:
      return x, None
    return x, jax.tree_util.tree_map(lambda *ys: jnp.stack(ys), *outputs)
  return run_loop


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
  return nn.with_logical_constraint(x, tuple(axes))

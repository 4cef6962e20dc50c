"""Run with 8 host devices: sharded "splash" and "blockwise" attention equal one-device "xla".

Rows are split over (data, fsdp) and heads over tensor; splash runs as a shard_map over that layout.
Used by test_sharded_attention.py in a subprocess (XLA_FLAGS must be set before jax starts).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from lladav_jax import sharding
from lladav_jax.models.attention import dot_product_attention
from lladav_jax.models.masks import make_attention_mask

BATCH, LENGTH, HEADS, KV_HEADS, HEAD_DIM = 4, 200, 4, 2, 16


def main() -> None:
  jax.config.update("jax_default_matmul_precision", "highest")
  assert jax.device_count() == 8, jax.devices()
  rng = np.random.default_rng(0)
  draw = lambda heads: jnp.asarray(rng.standard_normal((BATCH, LENGTH, heads, HEAD_DIM)), jnp.float32)
  q, k, v = draw(HEADS), draw(KV_HEADS), draw(KV_HEADS)
  segments = np.ones((BATCH, LENGTH), np.int32)
  segments[::2, 120:] = 2
  segments[:, 180:] = 0
  weights = jnp.asarray(rng.standard_normal(q.shape), jnp.float32)

  def value_and_grads(impl):
    def loss(q, k, v, segments):
      return jnp.sum(dot_product_attention(q, k, v, make_attention_mask(segments), impl) * weights)
    return jax.value_and_grad(loss, argnums=(0, 1, 2))

  reference = jax.jit(value_and_grads("xla"))(q, k, v, jnp.asarray(segments))
  rules = sharding.normalize_rules(sharding.DEFAULT_LOGICAL_AXIS_RULES)
  mesh = sharding.create_mesh({"data": 2, "fsdp": 2, "tensor": 2})
  per_head = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None, "tensor", None))
  per_token = NamedSharding(mesh, PartitionSpec(("data", "fsdp"), None))
  args = (jax.device_put(q, per_head), jax.device_put(k, per_head), jax.device_put(v, per_head),
          jax.device_put(jnp.asarray(segments), per_token))
  for impl in ("splash", "blockwise"):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      fn = value_and_grads(impl)
      if impl == "splash":
        assert "shard_map" in str(jax.make_jaxpr(fn)(*args)), "splash should run as a shard_map in a mesh"
      got = jax.jit(fn, in_shardings=(per_head, per_head, per_head, per_token))(*args)
    np.testing.assert_allclose(float(got[0]), float(reference[0]), rtol=1e-5)
    for name, g, r in zip("qkv", got[1], reference[1]):
      np.testing.assert_allclose(np.asarray(g), np.asarray(r), atol=2e-5, err_msg=f"{impl} d{name}")
  print("sharded attention OK")


if __name__ == "__main__":
  main()

"""Run in a subprocess with 8 host devices (one process) or 2 processes x 4 devices: load_pretrained
puts every parameter into the sharding the model's logical axes give it, with the values of an
unsharded load, and from a Hugging Face directory each process reads only its devices' parts.

Usage: python -m tests.convert.sharded_load_check CKPT HF_DIR [PROCESS_ID NUM_PROCESSES PORT]
(used by test_sharded_load.py; XLA_FLAGS must be set before jax starts).
"""

import sys

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from lladav_jax import load_pretrained, sharding
from lladav_jax.convert.tensor_dir import TensorDir
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import abstract_inputs
from tests import tiny

RULES = sharding.DEFAULT_LOGICAL_AXIS_RULES


def _leaves(tree):
  return {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(tree)}


def _check(params, expected_shardings, host_values, what):
  got, want = _leaves(params), _leaves(expected_shardings["params"])
  assert got.keys() == want.keys() == host_values.keys(), what
  for name, array in got.items():
    assert array.sharding.is_equivalent_to(want[name], array.ndim), (what, name, array.sharding, want[name])
    for shard in array.addressable_shards:
      np.testing.assert_array_equal(np.asarray(shard.data), host_values[name][shard.index], err_msg=f"{what} {name}")


def _bounds(index, shape):
  return tuple(s.indices(n)[:2] for s, n in zip(index, shape))


def main(ckpt: str, hf: str, process_id: int = 0, num_processes: int = 1, port: int = 0) -> None:
  if num_processes > 1:
    jax.distributed.initialize(f"localhost:{port}", num_processes, process_id)
  assert jax.device_count() == 8, jax.devices()
  mesh = sharding.create_mesh({"data": 1, "fsdp": 4, "tensor": 2})

  # The reference: every value, read whole on the host by a plain unsharded load.
  config, host_params = load_pretrained(ckpt, mesh=None)
  host = {k: np.asarray(v) for k, v in _leaves(host_params).items()}
  # The shardings the model is initialised with (train.state.sharded_init's recipe, without compiling).
  abstract = jax.eval_shape(LLaDAV(config, tiny.F32).init, jax.random.key(0), **abstract_inputs(config, 8, 16, 1))
  expected = sharding.logical_shardings(nn.get_partition_spec(abstract), mesh, RULES)
  # Spelled out for a few leaves: vocab over tensor, model width over fsdp, heads over tensor.
  spelled = {("language_model", "embed_tokens", "embedding"): P("tensor", "fsdp"),
             ("language_model", "layers", "self_attn", "q_proj", "kernel"): P(None, "fsdp", "tensor"),
             ("language_model", "layers", "mlp", "down_proj", "kernel"): P(None, "tensor", "fsdp"),
             ("vision_tower", "embeddings", "position_embedding"): P(None, "fsdp")}
  for path, spec in spelled.items():
    leaf = expected["params"]
    for key in path:
      leaf = leaf[key]
    assert leaf.spec == spec, (path, leaf.spec)

  params = load_pretrained(ckpt, mesh=mesh, rules=RULES).params
  _check(params, expected, host, "orbax")
  embed = params["language_model"]["embed_tokens"]["embedding"]
  assert sharding.sharded_fraction(embed) == 1 / 8, embed.sharding

  # From the Hugging Face directory: only slices, and only of this process's devices' parts.
  reads = []
  original = TensorDir.read_slice

  def recording_read_slice(self, key, index):
    reads.append((key, index))
    return original(self, key, index)

  def no_whole_reads(self, key):
    raise AssertionError(f"{key} was read whole")
  TensorDir.read_slice, TensorDir.read = recording_read_slice, no_whole_reads
  params = load_pretrained(hf, mesh=mesh, rules=RULES).params
  _check(params, expected, host, hf)
  q = "model.layers.1.self_attn.q_proj.weight"  # HF [out, in]; flax kernel [layers, in, out]
  kernel = params["language_model"]["layers"]["self_attn"]["q_proj"]["kernel"]
  q_reads = [_bounds(index[::-1], kernel.shape[1:]) for key, index in reads if key == q]
  local_parts = {_bounds(index[1:], kernel.shape[1:])
                 for index in kernel.sharding.addressable_devices_indices_map(kernel.shape).values()}
  assert sorted(q_reads) == sorted(local_parts), (q_reads, local_parts)  # each local part once, nothing else
  assert len(local_parts) == 8 // num_processes
  assert "torch" not in sys.modules  # loading needs no torch
  print(f"sharded load OK (process {process_id} of {num_processes})")


if __name__ == "__main__":
  main(sys.argv[1], sys.argv[2], *map(int, sys.argv[3:6]))

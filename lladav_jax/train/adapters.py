"""LoRA runs: the frozen base gets fresh adapters (and its quantised storage) at start, and the
adapters alone are written into the workdir.

`attach` turns params loaded from `checkpoint.init_from` (a float base) into the run's tree: every
adapted kernel quantised when `lora.base_quantization` says so, `lora_a` drawn as PEFT draws it
(U(+-1/sqrt(in)), from the run's seed) and `lora_b` zero, straight into the state's shardings.
`save` writes WORKDIR/adapters (convert/adapter_dir.py), replacing the previous copy.
"""

import pathlib
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from jax.experimental import multihost_utils

from lladav_jax.convert import adapter_dir
from lladav_jax.model_config import LLaDAVConfig
from lladav_jax.models.lora import LoraConfig, is_adapter, quantize_base, torch_linear_uniform

ADAPTERS_DIR = "adapters"
_ADAPTER_SEED_STREAM = 2  # fold_in(key(seed), n): 0 is the params init's key itself, 1 the masks'


def fresh_adapters(abstract_params: Any, seed: int) -> dict[tuple[str, ...], jax.Array]:
  """New adapter leaves for the adapter paths of `abstract_params`: lora_a uniform, lora_b zero."""
  flat = {p: v for p, v in traverse_util.flatten_dict(abstract_params).items() if is_adapter(p)}
  keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), _ADAPTER_SEED_STREAM), max(1, len(flat)))
  out = {}
  for key, (path, leaf) in zip(keys, sorted(flat.items())):
    out[path] = (torch_linear_uniform(key, leaf.shape, leaf.dtype) if path[-1] == "lora_a"
                 else jnp.zeros(leaf.shape, leaf.dtype))
  return out


def attach(base: Any, abstract_params: Any, param_shardings: Any, lora: LoraConfig, seed: int) -> Any:
  """The run's params from a float base (the model's params without adapters), in their shardings
  (`param_shardings`: the run's, or None to let jit choose). The base is donated: it is laid out as
  its leaves are in the run (moved there first if it is not), so each float leaf kept can reuse its buffer."""

  def build(base):
    flat = quantize_base(traverse_util.flatten_dict(base), lora)
    flat.update(fresh_adapters(abstract_params, seed))
    return traverse_util.unflatten_dict(flat)

  in_shardings = None
  if param_shardings is not None:
    run_shardings = traverse_util.flatten_dict(param_shardings)
    in_shardings = (traverse_util.unflatten_dict({p: run_shardings[p] for p in traverse_util.flatten_dict(base)}),)
  return jax.jit(build, in_shardings=in_shardings, out_shardings=param_shardings, donate_argnums=0)(base)


def adapter_leaves(params: Any) -> dict[tuple[str, ...], jax.Array]:
  return {p: v for p, v in traverse_util.flatten_dict(params).items() if is_adapter(p)}


def save(workdir: str, params: Any, *, lora: LoraConfig, scan_layers: bool, base: str, config: LLaDAVConfig) -> str:
  """Writes the adapters of `params` to WORKDIR/adapters (every process calls; process 0 writes)."""
  leaves = adapter_leaves(params)
  host = {p: np.asarray(multihost_utils.process_allgather(v, tiled=True)) for p, v in leaves.items()}
  out = pathlib.Path(workdir) / ADAPTERS_DIR
  if jax.process_index() == 0:
    fresh = out.with_name(out.name + ".new")
    shutil.rmtree(fresh, ignore_errors=True)
    adapter_dir.save(fresh, host, lora=lora, scan_layers=scan_layers, base=base, config=config)
    shutil.rmtree(out, ignore_errors=True)
    fresh.rename(out)
  return str(out)

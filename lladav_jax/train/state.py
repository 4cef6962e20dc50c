"""The train state (a pytree with no functions in it) and its sharded, never-materialised init.

Params and Adam moments are laid out by the logical axis rules; every optimiser leaf that mirrors a
parameter gets that parameter's sharding, counters are replicated. The init is traced abstractly and
compiled with these output shardings, so no host ever holds the whole model.
"""

from typing import Any, Callable

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lladav_jax import sharding
from lladav_jax.models.lladav import LLaDAV, abstract_params, init_inputs


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 []: steps taken (skipped ones included) = batches consumed
  params: Any  # the model's "params" collection
  opt_state: Any
  rng: jax.Array  # uint32 key data; step s draws its masks from fold_in(rng, s)
  skipped_steps: jax.Array  # int32 []: updates skipped for non-finite gradients, in total
  consecutive_skips: jax.Array  # int32 []: ... in a row up to now

  @property
  def key(self) -> jax.Array:
    return jax.random.wrap_key_data(self.rng)

  @property
  def progress(self) -> dict:
    """The counters a checkpoint keeps next to params and optimiser state."""
    return dict(step=self.step, rng=self.rng, skipped_steps=self.skipped_steps,
                consecutive_skips=self.consecutive_skips)

  @classmethod
  def from_checkpoint(cls, params: Any, opt_state: Any, progress: dict) -> "TrainState":
    return cls(params=params, opt_state=opt_state, **progress)


def new_state(params: Any, tx: optax.GradientTransformation, seed: int) -> TrainState:
  # The masking stream is fold_in(key(seed), 1); the params init uses key(seed) itself.
  return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                    rng=jax.random.key_data(jax.random.fold_in(jax.random.key(seed), 1)),
                    skipped_steps=jnp.zeros((), jnp.int32), consecutive_skips=jnp.zeros((), jnp.int32))


def with_shardings(abstract: Any, shardings: Any) -> Any:
  """ShapeDtypeStructs carrying the shardings that restored arrays must have."""
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, shardings)


def mirror_shardings(tree: Any, params: Any, param_shardings: Any, mesh: Mesh) -> Any:
  """Shardings for `tree` (e.g. an optimiser state): a leaf whose key path ends with a parameter's
  path and has its shape gets the parameter's sharding; anything else is replicated."""
  by_path = {}
  for (path, leaf), shard in zip(jax.tree_util.tree_flatten_with_path(params)[0],
                                 jax.tree.leaves(param_shardings)):
    by_path[tuple(path)] = (leaf.shape, shard)
  replicated = NamedSharding(mesh, PartitionSpec())

  def pick(path, leaf):
    for start in range(len(path)):
      hit = by_path.get(tuple(path[start:]))
      if hit is not None and hit[0] == leaf.shape:
        return hit[1]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, tree)


def state_shardings(abstract_state: TrainState, param_shardings: Any, mesh: Mesh) -> TrainState:
  replicated = NamedSharding(mesh, PartitionSpec())
  return TrainState(
      step=replicated, params=param_shardings,
      opt_state=mirror_shardings(abstract_state.opt_state, abstract_state.params, param_shardings, mesh),
      rng=replicated, skipped_steps=replicated, consecutive_skips=replicated)


def sharded_init(model: LLaDAV, make_tx: Callable[[Any], tuple[optax.GradientTransformation, Any]], mesh: Mesh,
                 rules, seed: int):
  """Lays out the state: returns (tx, labels, abstract_state, shardings, init) where `init()` builds
  a random state directly into its shardings, and `make_tx(abstract_params)` -> (tx, labels)."""
  rules = sharding.normalize_rules(rules)
  boxed = abstract_params(model)
  params_shape = nn.unbox(boxed)
  param_shardings = sharding.logical_shardings(nn.get_partition_spec(boxed), mesh, rules)
  tx, labels = make_tx(params_shape)
  abstract_state = jax.eval_shape(lambda: new_state(params_shape, tx, seed))
  shardings = state_shardings(abstract_state, param_shardings, mesh)

  def init_fn(rng):
    # Params depend only on input shapes; zeros built inside the program cost nothing.
    dummy = {k: jnp.zeros(v.shape, v.dtype) for k, v in init_inputs(model.config).items()}
    params = nn.unbox(model.init(rng, **dummy))["params"]
    return new_state(params, tx, seed)

  jitted_init = jax.jit(init_fn, out_shardings=shardings)

  def init() -> TrainState:
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted_init(jax.random.key(seed))

  return tx, labels, abstract_state, shardings, init


def with_params(state_shardings_: TrainState, params: Any, tx: optax.GradientTransformation,
                seed: int) -> TrainState:
  """A fresh state (step 0, new moments) around given params, placed in the state's shardings."""
  fn = jax.jit(lambda p: new_state(p, tx, seed), out_shardings=state_shardings_,
               in_shardings=(state_shardings_.params,), donate_argnums=0)
  return fn(params)

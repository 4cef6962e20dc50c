"""Parameters to and from an orbax PyTree checkpoint, one leaf in host memory at a time.

Saving: each leaf is a `_LazyLeaf` (shape, dtype and a loader). A TypeHandler registered for it
in a private registry loads, writes and drops one leaf after the other; on disk each leaf is an
ordinary numpy array, so any orbax restore reads it back. Arrays are stored in chunks of about
CHUNK_BYTES, split along their largest dimensions, so that a host restoring its shards of a
sharded array reads little beyond them.

Restoring: onto target shardings (each host reads only the chunks its devices hold) or, one leaf
at a time, into host numpy arrays (for export).
"""

import asyncio
import dataclasses
import itertools
import pathlib
from typing import Any, Callable

import jax
import numpy as np
import orbax.checkpoint as ocp
import tensorstore as ts
from flax import traverse_util
from orbax.checkpoint import future

CHUNK_BYTES = 16 * 2**20
_CHUNKS_IN_FLIGHT = 4

Path = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _LazyLeaf:
  shape: tuple[int, ...]
  dtype: np.dtype
  load: Callable[[], np.ndarray]
  on_written: Callable[[], None]


class _StreamingNumpyHandler(ocp.type_handlers.NumpyHandler):
  """Writes lazy leaves sequentially: load, write, release, next."""

  def __init__(self):
    super().__init__(deepcopy_host_arrays=False)

  async def _open_and_write(self, value: np.ndarray, tspec: dict, ts_context) -> None:
    # Overrides NumpyHandler's whole-array write: chunk by chunk, a few in flight, so tensorstore
    # never stages a second copy of the whole leaf (a chunked write of a C-ordered array would).
    store = await ts.open(ts.Spec(tspec), create=True, open=True, context=ts_context)
    chunk = store.chunk_layout.write_chunk.shape
    pending = []
    for starts in itertools.product(*(range(0, n, c) for n, c in zip(value.shape, chunk))):
      index = tuple(slice(s, min(s + c, n)) for s, c, n in zip(starts, chunk, value.shape))
      pending.append(store[index].write(value[index]))
      if len(pending) == _CHUNKS_IN_FLIGHT:
        await asyncio.gather(*pending)
        pending = []
    await asyncio.gather(*pending)

  async def serialize(self, values, infos, args=None):
    args = args or [ocp.SaveArgs()] * len(values)

    async def write_one_by_one():
      for leaf, info, arg in zip(values, infos, args):
        array = leaf.load()
        if array.shape != leaf.shape or array.dtype != leaf.dtype:
          raise ValueError(f"{info.name}: produced {array.dtype}{list(array.shape)}, planned "
                           f"{leaf.dtype}{list(leaf.shape)}")
        # NumpyHandler's own write coroutine (orbax-checkpoint 0.12), one array at a time.
        await self._background_serialize([array], [info], [arg])
        del array
        leaf.on_written()

    return [future.CommitFutureAwaitingContractedSignals(write_one_by_one(), name="lladav_params")]


def save(directory: pathlib.Path, leaves: dict[Path, tuple[tuple[int, ...], np.dtype, Callable[[], np.ndarray]]],
         on_written: Callable[[Path], None] = lambda path: None) -> None:
  """Writes {path: (shape, dtype, load)} as an orbax PyTree at `directory` (which must not exist)."""
  directory = pathlib.Path(directory).absolute()  # orbax wants absolute paths
  tree = traverse_util.unflatten_dict({
      path: _LazyLeaf(tuple(shape), np.dtype(dtype), load, lambda p=path: on_written(p))
      for path, (shape, dtype, load) in leaves.items()})
  registry = ocp.type_handlers.create_type_handler_registry(
      (np.ndarray, ocp.type_handlers.NumpyHandler()),
      (jax.Array, ocp.type_handlers.ArrayHandler()),
      (_LazyLeaf, _StreamingNumpyHandler()))
  save_args = jax.tree.map(lambda _: ocp.SaveArgs(chunk_byte_size=CHUNK_BYTES), tree,
                           is_leaf=lambda x: isinstance(x, _LazyLeaf))
  checkpointer = ocp.Checkpointer(ocp.PyTreeCheckpointHandler(type_handler_registry=registry))
  checkpointer.save(directory, args=ocp.args.PyTreeSave(tree, save_args=save_args))


def metadata(directory: pathlib.Path) -> dict[Path, tuple[tuple[int, ...], np.dtype]]:
  """{path: (shape, dtype)} of every array in the checkpoint, without reading any."""
  directory = pathlib.Path(directory).absolute()
  tree = ocp.PyTreeCheckpointer().metadata(directory).item_metadata.tree
  flat = traverse_util.flatten_dict(tree)
  return {tuple(path): (tuple(m.shape), np.dtype(m.dtype)) for path, m in flat.items()}


def read_leaf(directory: pathlib.Path, path: Path) -> np.ndarray:
  """One array, whole, into host memory (nothing else is read)."""
  directory = pathlib.Path(directory).absolute()
  item = traverse_util.unflatten_dict({path: 0})
  args = traverse_util.unflatten_dict({path: ocp.RestoreArgs(restore_type=np.ndarray)})
  restored = ocp.PyTreeCheckpointer().restore(
      directory, args=ocp.args.PyTreeRestore(item=item, restore_args=args, partial_restore=True))
  return traverse_util.flatten_dict(restored)[path]


def restore(directory: pathlib.Path, targets: dict[Path, jax.ShapeDtypeStruct]) -> dict[Path, Any]:
  """Restores every array straight into its target sharding and dtype ({path: ShapeDtypeStruct
  with a sharding}); each process reads only the chunks that its devices hold."""
  directory = pathlib.Path(directory).absolute()
  tree = traverse_util.unflatten_dict(targets)
  restore_args = ocp.checkpoint_utils.construct_restore_args(tree)
  restored = ocp.PyTreeCheckpointer().restore(
      directory, args=ocp.args.PyTreeRestore(item=tree, restore_args=restore_args))
  return {tuple(p): v for p, v in traverse_util.flatten_dict(restored).items()}

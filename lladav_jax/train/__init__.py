"""Training: the masked-diffusion train step, its sharded state, checkpoints and the loop.

`python -m lladav_jax.train --config configs/... --workdir DIR` runs it; see docs/training.md.
"""

_EXPORTS = {
    "TrainState": "lladav_jax.train.state",
    "TrainSetup": "lladav_jax.train.loop",
    "TrainingDiverged": "lladav_jax.train.loop",
    "setup": "lladav_jax.train.loop",
    "train": "lladav_jax.train.loop",
    "make_train_step": "lladav_jax.train.step",
    "make_optimizer": "lladav_jax.train.optimizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
  # Imported on first use: the loop pulls in orbax, which the step and optimizer do not need.
  if name in _EXPORTS:
    import importlib
    return getattr(importlib.import_module(_EXPORTS[name]), name)
  raise AttributeError(f"module 'lladav_jax.train' has no attribute {name!r}")

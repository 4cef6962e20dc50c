"""lladav_jax: LLaDA-V in JAX/Flax. `load_pretrained` loads converted or Hugging Face weights."""

__all__ = ["Pretrained", "load_pretrained"]


def __getattr__(name):
  # Imported on first use: loading weights pulls in orbax and safetensors, which the model code
  # does not need.
  if name in __all__:
    from lladav_jax.checkpoints import pretrained
    return getattr(pretrained, name)
  raise AttributeError(f"module 'lladav_jax' has no attribute {name!r}")

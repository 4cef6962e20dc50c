"""Weight conversion between Hugging Face checkpoints and lladav_jax parameters."""

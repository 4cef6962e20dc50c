"""Entry point of `python -m tools.convert_weights` (the same as `lladav-convert`)."""

from lladav_jax.convert.__main__ import main

main()

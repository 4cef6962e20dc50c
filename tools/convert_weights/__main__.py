"""Entry point of `python -m tools.convert_weights`."""

import os

# Conversion is host work: leave the accelerators to whatever else runs on this machine.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from tools.convert_weights.cli import main  # noqa: E402

main()

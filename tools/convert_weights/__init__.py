"""`python -m tools.convert_weights {import,assemble,export} ...`: the weight converter's command line.

The conversion itself is the package's (`lladav_jax/convert/`, docs/convert.md); this directory only
gives it the command the docs use from a checkout.
"""

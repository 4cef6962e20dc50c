"""Weight conversion between Hugging Face checkpoints and lladav_jax parameters (docs/convert.md).

key_map.py            the declarative table: HF keys <-> parameter paths, named transforms
layouts.py            which HF layouts exist and how their config.json become module configs
safetensors_stream.py safetensors read and written one tensor at a time
plan.py               every parameter leaf and its source, validated against the model's shapes
orbax_io.py           params to and from orbax, one leaf in memory at a time
checkpoint_dir.py     the converted-checkpoint directory and its atomic staging
convert.py, cli.py    import / assemble / export (`python -m tools.convert_weights`)
"""

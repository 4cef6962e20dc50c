"""Weight conversion between Hugging Face checkpoints and lladav_jax parameters (docs/convert.md).

key_map.py            the declarative table: HF keys <-> parameter paths, named transforms
layouts.py            which HF layouts exist and how their config.json become module configs
tensor_dir.py         the tensors of a checkpoint directory or file, whichever format (the one reader)
safetensors_stream.py safetensors read and written one tensor at a time
torch_zip.py          PyTorch .bin (torch.save zip) read without torch: a restricted unpickler, lazy reads
dtypes.py             dtypes by their safetensors names, as every reader reports them
conversion_plan.py    every parameter leaf and its source, validated against the model's shapes
orbax_io.py           params to and from orbax, one leaf in memory at a time
checkpoint_dir.py     the converted-checkpoint directory and its atomic staging
report.py             the mapping table, progress bar and summary a conversion prints
operations.py         import / assemble / export as library calls
__main__.py           their command line (`python -m tools.convert_weights`, `lladav-convert`)
"""

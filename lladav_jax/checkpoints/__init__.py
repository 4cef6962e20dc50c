"""Parameters on disk: `load_pretrained` (converted checkpoints, Hugging Face directories, training
workdirs) and the training workdir's checkpoints (`workdir.py`)."""

"""Parameters on disk: `load_pretrained` (converted checkpoints, Hugging Face directories, training
workdirs), whether a checkpoint fits a run's model (`fitting.py`) and the training workdir's checkpoints
(`workdir.py`)."""

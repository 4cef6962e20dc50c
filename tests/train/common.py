"""Small run configs shared by the training tests (CPU-sized, milliseconds per step)."""

from configs import tiny as tiny_run_config


def run_config(**train_overrides):
  """configs/tiny.py shrunk to 28 px crops (4 vision tokens each) and 64-token rows."""
  config = tiny_run_config.get_config()
  config.model.vision.image_size = 28
  config.train.synthetic.update(dict(seq_len=64, max_crops=2))
  config.train.update(train_overrides)
  return config

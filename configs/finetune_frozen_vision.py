"""configs/finetune.py with the vision tower frozen: only the projector and the language model (with
the image newline) are trained, and the vision tower gets no optimiser state. The same as
`--config.optim.trainable='("projector", "language")'` on configs/finetune.py.
"""

from configs import finetune


def get_config():
  config = finetune.get_config()
  config.optim.update(dict(trainable=("projector", "language"), vision_lr=None))
  return config

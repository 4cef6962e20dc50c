"""Demo stage 2: visual question answering (llava_llada chat template), all parts trained, starting
from demo stage 1's params at a lower learning rate (as the paper's stage 2 does)."""

from configs import demo


def get_config():
  config = demo.get_config()
  config.train.update(dict(num_steps=2000))
  config.optim.update(dict(lr=1e-3, vision_lr=2e-4))
  config.checkpoint.update(dict(init_from="workdir/demo/stage1"))
  config.data.update(dict(
      sources=[dict(path="workdir/demo/data/vqa_train.json", image_folder="workdir/demo/data")]))
  return config

"""Demo stage 1: align on captions. The language model is random here, so unlike the paper's stage 1
it trains with the projector (and the vision tower): there is nothing to keep. Captions teach shapes,
colours and counts densely; they use stage 2's chat template, so that stage 2 starts on familiar
ground instead of unlearning a template it never saw."""

from configs import demo


def get_config():
  config = demo.get_config()
  config.train.update(dict(num_steps=1000))
  config.data.update(dict(
      sources=[dict(path="workdir/demo/data/captions_train.json", image_folder="workdir/demo/data")]))
  return config

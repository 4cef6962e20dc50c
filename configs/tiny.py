"""A CPU-sized LLaDA-V with the real architecture (384 px crops, 729 tokens each)."""

from configs import base


def get_config():
  config = base.get_config()
  config.model.text.update(dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                num_attention_heads=4, num_key_value_heads=4))
  config.model.vision.update(dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                  num_attention_heads=2))
  config.model.max_length = 4096
  config.compute.update(dict(dtype="float32", remat_policy="none"))
  config.mesh.update(dict(data=-1, fsdp=1, tensor=1))
  return config

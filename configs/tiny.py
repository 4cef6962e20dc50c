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
  # Special ids inside the small vocabulary ([MASK] must be embeddable).
  config.model.tokens.update(dict(bos=500, eos=501, mask=511, start_header=502, end_header=503, eot=504))
  # A few steps on synthetic samples, for smoke runs of `python -m lladav_jax.train`.
  config.train.update(dict(global_batch_size=8, num_steps=20, log_every=1))
  config.optim.update(dict(lr=1e-3, vision_lr=1e-3))
  config.checkpoint.update(dict(every_steps=10, keep=2))
  config.train.update(dict(data_source="synthetic"))
  config.train.synthetic.update(dict(num_examples=64, image_fraction=0.25, seq_len=1600, max_crops=2))
  return config

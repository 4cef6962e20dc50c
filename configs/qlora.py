"""QLoRA: configs/lora.py over a frozen base stored as 4-bit NormalFloat codes with one float32 scale
per 64 inputs (QLoRA's block), dequantised layer by layer where it is used. The adapted kernels hold
about a quarter of their bfloat16 bytes; embeddings, LM head, norms and the vision tower stay bfloat16.

  python -m lladav_jax.train --config configs/qlora.py --workdir runs/mine-4bit \\
      --config.checkpoint.init_from=ckpt/lladav-8b --config.train.tokenizer_dir=ckpt/lladav-8b/tokenizer \\
      '--config.data.sources[0].path=data/mine.json' '--config.data.sources[0].image_folder=data/images'

`--config.lora.base_quantization=int8` (with quantization_block=0: one scale per output channel) halves
the adapted kernels instead.
"""

from configs import lora


def get_config():
  config = lora.get_config()
  config.lora.update(dict(base_quantization="nf4", quantization_block=64))
  return config

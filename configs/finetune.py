"""Fine-tune a LLaDA-V checkpoint on your own LLaVA-format data (upstream scripts/llada_v_finetune.sh).

Every tower is trained (vision tower lr 2e-6, projector and language model 1e-5), anyres_max_4 with
spatial unpadding, batch 64 (upstream: 4 nodes x 8 GPUs x 1 x 2 accumulation steps), max length 8192,
one epoch. Two settings have no default, the checkpoint and the data:

  python -m lladav_jax.train --config configs/finetune.py --workdir runs/mine \\
      --config.checkpoint.init_from=ckpt/lladav-8b --config.train.tokenizer_dir=ckpt/lladav-8b/tokenizer \\
      '--config.data.sources[0].path=data/mine.json' '--config.data.sources[0].image_folder=data/images'

`init_from` is anything `load_pretrained` reads: a converted checkpoint, upstream's Hugging Face
directory, or a workdir. configs/finetune_frozen_vision.py keeps the vision tower as it is.
"""

from ml_collections import config_dict

from configs import base
from lladav_jax import run_config
from lladav_jax.data.sources import SourceSpec


def get_config():
  config = base.get_config()
  config.model.update(dict(max_length=8192))
  config.train.update(dict(global_batch_size=64, num_epochs=1))
  config.optim.update(dict(trainable=("vision", "projector", "language"), lr=1e-5, vision_lr=2e-6))
  # One source: every SourceSpec field can be overridden (image_folder, sampling, ...); the path must be.
  source = run_config.dataclass_section(SourceSpec(path=""))
  config.data.update(dict(
      sources=[source],
      template="llava_llada",
      pad_group_size=1,  # upstream trains with one sample per device: no EOS padding
  ))
  config.checkpoint.update(dict(every_steps=5000, keep=1))
  config.checkpoint.init_from = config_dict.placeholder(str)  # None: must be given (a fine-tune needs params)
  return config

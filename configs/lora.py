"""LoRA fine-tuning of a converted LLaDA-V checkpoint on your own LLaVA-format data, on one host.

The base (every tower) is frozen and held in bfloat16; adapters of rank 64 (alpha 128, dropout 0.05,
as LLaVA's LoRA recipe scales them) sit on the language tower's q, k, v, o, gate, up and down
projections and on the projector, trained with AdamW at 2e-4 (LLaVA's LoRA rate), cosine schedule,
3% warmup. Batch 16 (two rows per chip of an 8-chip host), max length 8192, one epoch. The memory
this takes per device is in docs/training.md (tools/plan.py). Two settings have no default:

  python -m lladav_jax.train --config configs/lora.py --workdir runs/mine \\
      --config.checkpoint.init_from=ckpt/lladav-8b --config.train.tokenizer_dir=ckpt/lladav-8b/tokenizer \\
      '--config.data.sources[0].path=data/mine.json' '--config.data.sources[0].image_folder=data/images'

The run writes WORKDIR/adapters; use them with `--adapter`, or export them (docs/convert.md).
configs/qlora.py is the same over a 4-bit base.
"""

from ml_collections import config_dict

from configs import base


def get_config():
  config = base.get_config()
  config.model.update(dict(max_length=8192))
  config.compute.update(dict(param_dtype="bfloat16"))  # the frozen base; adapters are float32
  config.mesh.update(dict(data=1, fsdp=-1, tensor=1))
  config.train.update(dict(global_batch_size=16, num_epochs=1))
  config.optim.update(dict(trainable=("vision", "projector", "language"), lr=2e-4, vision_lr=2e-4,
                           warmup_ratio=0.03, weight_decay=0.0))
  config.lora.update(dict(enabled=True, rank=64, alpha=128.0, dropout=0.05, projector=True))
  config.data.update(dict(
      sources=[dict(path="data/mine.json", image_folder="data/images")],
      template="llava_llada",
      pad_group_size=1,
  ))
  config.checkpoint.update(dict(every_steps=1000, keep=1))
  config.checkpoint.init_from = config_dict.placeholder(str)  # None: must be given (adapters need a base)
  return config

"""Stage 2, single-image visual instruction tuning (paper Table 1; upstream
scripts/train_llada_v/llada_v_si_10M.sh).

MAmmoTH-VL single-image (10M), anyres_max_4 with spatial unpadding and image newlines, everything
trained: vision tower lr 2e-6, projector and language model 1e-5; batch 256 (upstream: 1 per GPU x 4
accumulation steps), max length 8192, one epoch. Starts from stage 1's params (LLaDA-8B-Instruct,
SigLIP2 and the aligned projector). Raise train.micro_batches when 256 rows do not fit the devices.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.update(dict(max_length=8192))
  config.train.update(dict(global_batch_size=256))
  config.optim.update(dict(trainable=("vision", "projector", "language"), lr=1e-5, vision_lr=2e-6))
  config.data.update(dict(
      sources=[dict(path="data/mammoth-vl/mammoth_si_10M.json", image_folder="data/mammoth-vl/images")],
      template="llava_llada",
      pad_group_size=1,  # upstream trains with one sample per device: no EOS padding
  ))
  config.checkpoint.update(dict(every_steps=5000, keep=10, init_from="runs/stage1_projector"))
  return config

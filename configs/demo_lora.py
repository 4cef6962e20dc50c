"""Demo stage 2 with LoRA instead of full fine-tuning: demo stage 1's params frozen, adapters of rank
16 (alpha 32) on the language tower's seven projections, the projector and the vision tower's
attention and MLP layers, trained on the same questions for the same 2000 steps at stage 2's rate,
1e-3, for every adapter (the projector's too). docs/demo.md has the accuracy next to the full
stage 2's, and the settings tried.

  python -m lladav_jax.train --config configs/demo_lora.py --workdir workdir/demo/lora
"""

from configs import demo_stage2
from lladav_jax.models.lora import VISION_MODULES


def get_config():
  config = demo_stage2.get_config()
  config.optim.update(dict(lr=1e-3, vision_lr=1e-3, projector_lr=1e-3))
  config.lora.update(dict(enabled=True, rank=16, alpha=32.0, projector=True, vision_targets=VISION_MODULES))
  return config

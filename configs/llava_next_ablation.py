"""The LLaVA-NeXT data ablation (paper Sec. 4; upstream scripts/train_ablation/llada_v_sft.sh).

LLaVA-NeXT instruction data (779K) on top of stage 1 (LLaDA-8B-Instruct + the aligned projector),
everything trained (vision 2e-6, the rest 1e-5), max length 8192, one epoch. Upstream runs 1 sample
per GPU with 2 accumulation steps; batch 128 is that on 64 GPUs, LLaVA-NeXT's own fine-tuning batch.
"""

from configs import stage2_si


def get_config():
  config = stage2_si.get_config()
  config.train.update(dict(global_batch_size=128))
  config.data.update(dict(
      sources=[dict(path="data/llava_next/llava_next_raw_format_processed.json",
                    image_folder="data/llava_next/images")],
  ))
  config.checkpoint.update(dict(every_steps=5000, keep=1, init_from="runs/stage1_projector"))
  return config

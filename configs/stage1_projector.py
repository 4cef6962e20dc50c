"""Stage 1, language-image alignment (paper Table 1; upstream scripts/llada_v_pretrain.sh).

LLaVA-Pretrain (558K captions), the plain template, one 384 px crop per image ("square", "flat": 729
tokens, no image newline), only the projector trained (upstream --mm_tunable_parts=mm_mlp_adapter),
lr 1e-3, batch 64 (upstream: 4 GPUs x 16), max length 8192, one epoch.

Starts from LLaDA-8B-Instruct and SigLIP2 so400m-patch14-384 with a freshly initialised projector and
image newline: `python -m tools.convert_weights assemble --llada LLaDA-8B-Instruct --siglip
siglip2-so400m-patch14-384 ckpt/stage1_init` writes that checkpoint.
"""

from configs import base


def get_config():
  config = base.get_config()
  config.model.update(dict(image_aspect_ratio="square", patch_merge_type="flat", max_length=8192))
  config.train.update(dict(global_batch_size=64))
  config.optim.update(dict(trainable=("projector",), lr=1e-3, vision_lr=None))
  config.data.update(dict(
      sources=[dict(path="data/llava_pretrain/blip_laion_cc_sbu_558k.json",
                    image_folder="data/llava_pretrain/images")],
      template="plain",
      pad_group_size=16,  # upstream pads each device's batch of 16 (EOS, then zero embeddings)
      crop_buckets=(1,),
  ))
  config.checkpoint.update(dict(every_steps=1000, keep=1, init_from="ckpt/stage1_init"))
  return config

"""The demo model: a tiny LLaDA-V with the real architecture, trained from scratch on shapes.

`make demo` (lladav_jax/demo) trains it in two stages on a synthetic visual question-answering task
(lladav_jax/demo/shapes.py) with a small tokenizer (lladav_jax/demo/tokenizer.py). Crops are 84 px
with 28 px patches: 9 tokens per crop instead of 729, one per cell of the scene's 3 x 3 grid, so that
a 2-core CPU trains it in minutes; the anyres tiling, unpadding, image newlines, chat template,
diffusion loss and sampler are the real ones. Stage configs (demo_stage1.py, demo_stage2.py) set
the data and the schedule.
"""

from configs import base
from lladav_jax.demo.tokenizer import TOKEN_IDS

# Upstream's default system prompt is 40 tokens: most of a demo sequence. Prompts at inference use
# this one too (lladav_jax/demo/evaluate.py, --system-prompt in the printed generate command).
SYSTEM_PROMPT = "You are a helpful assistant."
IMAGE_SIZE = 84  # the generated images are one crop (lladav_jax/demo/shapes.py)
VOCAB_SIZE = 512


def get_config():
  config = base.get_config()
  config.model.text.update(dict(vocab_size=VOCAB_SIZE, hidden_size=128, intermediate_size=384,
                                num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=4,
                                max_position_embeddings=1024,
                                initializer_range=0.088))  # ~1/sqrt(width): LLaDA's 0.02 is for width 4096
  config.model.vision.update(dict(hidden_size=64, intermediate_size=192, num_hidden_layers=3,
                                  num_attention_heads=4, image_size=IMAGE_SIZE, patch_size=28))
  config.model.vision_tower_name = "demo-siglip-84"
  config.model.max_length = 512
  config.model.tokens.update(TOKEN_IDS.to_dict())
  # Rows of at most 112 tokens and a small vocabulary: the plain scores and full logits are cheap.
  config.compute.update(dict(dtype="float32", remat_policy="none", attention_impl="xla", loss_chunk=0))
  config.mesh.update(dict(data=-1, fsdp=1, tensor=1))
  config.train.update(dict(global_batch_size=16, log_every=10, tokenizer_dir="workdir/demo/tokenizer"))
  # A slow projector keeps the image features near the text embeddings' scale (see docs/demo.md).
  config.optim.update(dict(lr=2e-3, vision_lr=2e-3, projector_lr=5e-5, warmup_ratio=0.05))
  config.checkpoint.update(dict(every_steps=100, keep=1, async_save=False))
  config.data.update(dict(seq_len_buckets=(64, 112), crop_buckets=(2,), max_length=112, num_workers=0,
                          system_prompt=SYSTEM_PROMPT,
                          pad_group_size=None, rejects_dir="workdir/demo/rejects"))
  return config

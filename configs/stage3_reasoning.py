"""Stage 3, multimodal reasoning (paper Table 1; upstream scripts/train_llada_v/llada_v_vw.sh).

VisualWebInstruct (900K reasoning QA), max length 8192, otherwise as stage 2. Starts from the
OneVision stage's params.
"""

from configs import stage2_si


def get_config():
  config = stage2_si.get_config()
  config.model.update(dict(max_length=8192))
  config.data.update(dict(
      sources=[dict(path="data/visualwebinstruct/mixed_conversation.json",
                    image_folder="data/visualwebinstruct/images")],
  ))
  config.data.video.update(dict(frames_upbound=32))
  config.checkpoint.update(dict(every_steps=1000, keep=4, init_from="runs/stage2_ov"))
  return config

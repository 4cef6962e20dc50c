"""Stage 2, OneVision data (paper Table 1; upstream scripts/train_llada_v/llada_v_ov_2M.sh).

MAmmoTH-VL OneVision (2M: single images, multiple images, video up to 32 frames), max length 16384,
otherwise as stage 2 single-image. Starts from the single-image stage's params.
"""

from configs import stage2_si


def get_config():
  config = stage2_si.get_config()
  config.model.update(dict(max_length=16384))
  config.data.update(dict(
      sources=[dict(path="data/mammoth-vl/mammoth_ov_2M.json", image_folder="data/mammoth-vl/images",
                    video_folder="data/mammoth-vl/videos")],
  ))
  config.data.video.update(dict(frames_upbound=32))
  config.checkpoint.update(dict(every_steps=1000, keep=8, init_from="runs/stage2_si"))
  return config

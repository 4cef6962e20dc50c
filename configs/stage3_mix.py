"""Stage 3, balanced reasoning mix (paper Table 1; upstream scripts/train_llada_v/llada_v_mix_ov_vw.sh).

OneVision data mixed with VisualWebInstruct reasoning (upstream's mix_ov_2M_vw_reasoning.json; images
looked up in MAmmoTH-VL's folder, then VisualWebInstruct's), max length 16384. Starts from the
reasoning stage's params.
"""

from configs import stage2_si


def get_config():
  config = stage2_si.get_config()
  config.model.update(dict(max_length=16384))
  config.data.update(dict(
      sources=[dict(path="data/mix_ov_2M_vw_reasoning.json", image_folder="data/mammoth-vl/images",
                    image_folder_fallback="data/visualwebinstruct/images", video_folder="data/mammoth-vl/videos")],
  ))
  config.data.video.update(dict(frames_upbound=32))
  config.checkpoint.update(dict(every_steps=2000, keep=6, init_from="runs/stage3_reasoning"))
  return config

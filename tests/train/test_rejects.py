"""Rejected training records are visible without asking: counted by reason in the progress line and in
metrics.jsonl, listed in the workdir's rejects log; over `data.max_rejected_fraction` the run stops
(tests/train/test_bad_inputs.py: a wrong image folder)."""

import json
import logging

from configs import finetune
from lladav_jax.train import loop
from lladav_jax.train.metrics import read_metrics
from tests.train import recipe


def test_rejects_are_counted_printed_and_logged_in_the_workdir(tmp_path, capsys, caplog):
  data_file, images = recipe.write_llava_data(tmp_path / "mine")
  missing = sorted(images.iterdir())[:2]  # 2 of the 4 images: a quarter of the records
  for path in missing:
    path.unlink()
  checkpoint = recipe.write_upstream_checkpoint(tmp_path / "LLaDA-V")
  config = recipe.apply(finetune.get_config(), {**recipe.TINY_MODEL, **recipe.TINY_RUN, "train.num_steps": 4,
                                                "data.max_rejected_fraction": 0.3})
  config.checkpoint.init_from = config.train.tokenizer_dir = str(checkpoint)
  config.data.sources[0].update(dict(path=str(data_file), image_folder=str(images)))
  workdir = tmp_path / "run"
  with caplog.at_level(logging.INFO, logger="lladav_jax.train"):
    loop.train(config, str(workdir))

  log = [json.loads(line) for line in (workdir / "rejects" / "rejects-process00000-of-00001.jsonl").open()]
  assert {e["reason"] for e in log} == {"image_missing"}
  assert {e["detail"] for e in log} == {f"image file not found: {path}" for path in missing}
  metrics = read_metrics(str(workdir / "metrics.jsonl"))
  counts = [metrics[step].get("rejected_image_missing", 0) for step in sorted(metrics)]
  assert counts == sorted(counts) and counts[-1] == len(log)  # 8 records read per pass: every one logged once
  assert f"rejected=image_missing:{counts[-1]}" in capsys.readouterr().err
  assert f"rejected records (this process): image_missing {counts[-1]}" in caplog.text

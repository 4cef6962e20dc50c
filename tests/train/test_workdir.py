"""The training workdir as others use it: everything in it (checkpoints included) follows the umask, so a
group can share it; reading it for inference writes nothing and logs no orbax warning; metrics.jsonl
keeps each step once across restarts."""

import json
import logging
import os
import stat
import pytest

from configs import finetune
from lladav_jax.checkpoints.pretrained import load_pretrained
from lladav_jax.train import loop
from lladav_jax.train.metrics import drop_steps_after
from tests.train import recipe


def tree(root):
  """{relative path: (is directory, permission bits)} of everything under root."""
  out = {}
  for directory, dirs, files in os.walk(root):
    for name in dirs + files:
      path = os.path.join(directory, name)
      mode = os.lstat(path).st_mode
      out[os.path.relpath(path, root)] = (stat.S_ISDIR(mode), stat.S_IMODE(mode))
  return out


@pytest.mark.slow
def test_the_workdir_follows_the_umask_and_reads_back_quietly(tmp_path, caplog):
  data_file, images = recipe.write_llava_data(tmp_path / "mine")
  (images / "picture0.png").unlink()  # one reject: the rejects log is written too
  checkpoint = recipe.write_upstream_checkpoint(tmp_path / "LLaDA-V")
  for name in os.listdir(checkpoint):  # a private tokenizer: copies must not keep its mode
    os.chmod(checkpoint / name, 0o600)
  config = recipe.apply(finetune.get_config(), {**recipe.TINY_MODEL, **recipe.TINY_RUN, "train.num_steps": 2,
                                                "checkpoint.every_steps": 1, "checkpoint.async_save": True,
                                                "data.max_rejected_fraction": 0.5})
  config.checkpoint.init_from = config.train.tokenizer_dir = str(checkpoint)
  config.data.sources[0].update(dict(path=str(data_file), image_folder=str(images)))
  workdir = tmp_path / "run"
  previous = os.umask(0o027)  # group members may read, others nothing
  try:
    loop.train(config, str(workdir))
  finally:
    os.umask(previous)
  found = tree(workdir)
  for part in ("checkpoints/2/params", "rejects/rejects-process00000-of-00001.jsonl", "tokenizer/tokenizer.json",
               "config.json", "metrics.jsonl", "loss.png", "tensorboard"):
    assert part in found, sorted(found)
  wrong = {path: oct(mode) for path, (is_dir, mode) in found.items() if mode != (0o750 if is_dir else 0o640)}
  assert wrong == {}

  before = tree(workdir)
  with caplog.at_level(logging.DEBUG):
    params = load_pretrained(workdir).params
  assert params["language_model"]["lm_head"]["kernel"].shape == (32, 96)
  assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
  assert tree(workdir) == before, "reading wrote nothing"


def test_metrics_of_an_interrupted_run_are_dropped_past_its_checkpoint(tmp_path):
  path = tmp_path / "metrics.jsonl"
  lines = [json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3, 4, 5)]
  path.write_text("".join(lines) + '{"step": 6, "lo')  # killed while writing step 6
  drop_steps_after(str(path), 4)
  assert path.read_text() == "".join(lines[:4])
  drop_steps_after(str(path), 4)  # nothing to drop: left as it is
  assert path.read_text() == "".join(lines[:4])
  drop_steps_after(str(path), 0)  # a restart from scratch
  assert path.read_text() == ""

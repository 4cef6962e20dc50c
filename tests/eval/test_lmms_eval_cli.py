"""(slow) lmms-eval's own command line runs its MuirBench task on a local parquet file with this model, and
gives the answers and the score the project's runner gives on the same file.

lmms-eval pins av < 16 (the project: av 18), so it lives in an environment of its own: set
LMMS_EVAL_PYTHON to that environment's python (lmms-eval and requirements.txt without av installed;
docs/eval.md). The model is found through the entry point pyproject.toml declares: a dist-info holding
it is put on the subprocess's path next to this checkout.
"""

import glob
import json
import os
import pathlib
import subprocess
import tomllib

import pytest

from lladav_jax import load_pretrained
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.eval import evaluate, get_task, load_task_records
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lladav import LLaDAV
from tests.eval import common

ROOT = pathlib.Path(__file__).resolve().parents[2]
GEN_KWARGS = {"temperature": 0, "cfg": 0, "remasking": "low_confidence", "gen_length": 2, "block_length": 2,
              "gen_steps": 2, "think_mode": "no_think"}  # eval/scripts/evaluate.sh for muirbench
# Written by lmms-eval's environment with `datasets`, so the file carries the Image features it decodes.
WRITE_PARQUET = """
import json, sys, datasets
from PIL import Image
rows = []
for i, (question, options, answer, count) in enumerate(zip(
    ["How many cats are in <image> and <image>?", "Which picture shows a dog?", "Which slide comes first?"],
    [["1", "2", "3"], ["<image>", "<image>", "<image>", "None of the choices"], ["the left", "the right"]],
    json.loads(sys.argv[2]), [2, 3, 2])):
  images = [Image.effect_noise((40 + 8 * k, 24), 60 + 10 * i).convert("RGB") for k in range(count)]
  rows.append(dict(idx=str(i), task=["Counting", "Image-Text Matching", "Counting"][i], image_relation="Temporal",
                   image_type="Photography", question=question, options=options, answer=answer, image_list=images,
                   counts=str(count)))
features = datasets.Features(idx=datasets.Value("string"), task=datasets.Value("string"),
                             image_relation=datasets.Value("string"), image_type=datasets.Value("string"),
                             question=datasets.Value("string"), options=datasets.Sequence(datasets.Value("string")),
                             answer=datasets.Value("string"), image_list=datasets.Sequence(datasets.Image()),
                             counts=datasets.Value("string"))
datasets.Dataset.from_list(rows, features=features).to_parquet(sys.argv[1])
print(__import__("lmms_eval.tasks.muirbench.utils", fromlist=["x"]).__file__)
"""


def entry_point_dist(target: pathlib.Path) -> pathlib.Path:
  """A dist-info declaring pyproject.toml's lmms_eval.models entry points (what `pip install` writes)."""
  project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
  info = target / f"{project['name']}-{project['version']}.dist-info"
  info.mkdir(parents=True)
  (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
  group = project["entry-points"]["lmms_eval.models"]
  (info / "entry_points.txt").write_text("[lmms_eval.models]\n" + "".join(f"{k} = {v}\n" for k, v in group.items()))
  return target


@pytest.mark.slow
def test_lmms_eval_cli_runs_muirbench_with_this_model(tmp_path):
  python = os.environ.get("LMMS_EVAL_PYTHON")
  if not python:
    pytest.skip("LMMS_EVAL_PYTHON is not set (a python with lmms-eval installed; docs/eval.md)")
  env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{entry_point_dist(tmp_path / 'dist')}",
             HF_HOME=str(tmp_path / "hf"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
  data = tmp_path / "muirbench" / "test.parquet"
  data.parent.mkdir()

  def write_data(answers):
    made = subprocess.run([python, "-c", WRITE_PARQUET, str(data), json.dumps(answers)], env=env, capture_output=True,
                          text=True, check=True)
    return pathlib.Path(made.stdout.strip().splitlines()[-1])

  upstream_utils = write_data(["B", "D", "A"])
  checkpoint = common.make_checkpoint(tmp_path / "ckpt", sharp=True)
  config, params = load_pretrained(checkpoint)
  model, tokenizer = LLaDAV(config, ComputeConfig(scan_layers=True)), Tokenizer.from_dir(checkpoint)
  task = get_task("muirbench")

  def ours():
    records, failures = load_task_records(task, [str(data)])
    assert not failures and len(records) == 3
    return records, evaluate(model, {"params": params}, tokenizer, task, records, batch_size=2, progress=False,
                             log=None)
  # The answers do not change the decode: make the first one right, so that the score is not 0 either way.
  _, first = ours()
  write_data([first.samples[0]["parsed"], "D", "A"])
  records, result = ours()
  # lmms-eval's own muirbench task (yaml and utils.py), reading the local file instead of the Hub.
  tasks = tmp_path / "tasks"
  tasks.mkdir()
  (tasks / "utils.py").write_text(upstream_utils.read_text())
  yaml_text = (upstream_utils.parent / "muirbench.yaml").read_text()
  yaml_text = yaml_text.replace("dataset_path: MUIRBENCH/MUIRBENCH", "dataset_path: parquet")
  yaml_text = yaml_text.replace("  token: True", f"  data_files:\n    test: {data}")
  yaml_text = yaml_text.replace('task: "muirbench"', 'task: "muirbench_local"')
  (tasks / "muirbench_local.yaml").write_text(yaml_text)
  out = tmp_path / "out"
  run = subprocess.run([python, "-m", "lmms_eval", "--model", "lladav_jax", "--model_args",
                        f"pretrained={checkpoint}", "--tasks", "muirbench_local", "--include_path",
                        str(tasks), "--gen_kwargs", ",".join(f"{k}={v}" for k, v in GEN_KWARGS.items()),
                        "--batch_size", "2", "--log_samples",
                        "--output_path", str(out)], env=env, capture_output=True, text=True, timeout=1200)
  assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
  (results_file,) = glob.glob(str(out / "**" / "*_results.json"), recursive=True)
  (samples_file,) = glob.glob(str(out / "**" / "*muirbench_local*.jsonl"), recursive=True)
  score = json.loads(pathlib.Path(results_file).read_text())["results"]["muirbench_local"]
  logged = sorted((json.loads(line) for line in pathlib.Path(samples_file).read_text().splitlines()),
                  key=lambda s: s["doc_id"])
  assert [s["input"] for s in logged] == [r.question for r in records]  # the same prompt text
  # lmms-eval's filtered answers (its flexible-extract filter) are the runner's parsed answers.
  assert [s["muirbench_score_overall"]["pred"] for s in logged] == [s["parsed"] for s in result.samples]
  assert result.summary["metrics"]["accuracy"] >= 1 / 3
  assert score["muirbench_score_overall,flexible-extract"] == pytest.approx(result.summary["metrics"]["accuracy"])

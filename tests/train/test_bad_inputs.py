"""What each bad input to `python -m lladav_jax.train` and `python -m lladav_jax.data` gets: one line on
stderr naming the culprit, a non-zero exit, no traceback. The table of docs/training.md ("Bad input")
is read here: every row is a case below and every case a row, with the message it shows ("…" stands for
the parts that vary) matched against what the command prints.
"""

import dataclasses
import json
import re
import subprocess
import sys
from typing import Callable

import pytest

from configs import finetune
from lladav_jax.train import __main__ as train_cli
from tests.train import recipe
from tests.train.subprocesses import ROOT, env

DOCS = ROOT / "docs" / "training.md"


@dataclasses.dataclass(frozen=True)
class Case:
  bad_input: str  # the table's first column
  exit_status: int
  shown: str  # the table's message, "…" where it varies
  # (paths) -> ("cli", argv) for a command run in its own process, or ("run", ConfigDict) for train_cli.run
  make: Callable


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
  root = tmp_path_factory.mktemp("bad")
  data_file, images = recipe.write_llava_data(root / "mine")
  (root / "empty.json").write_text("[]")
  (root / "truncated.json").write_text(json.dumps([{"id": "a", "conversations": []}])[:-1])
  (root / "syntax.py").write_text("def get_config(:\n  pass\n")
  other = recipe.write_upstream_checkpoint(root / "LLaDA-V")
  return dict(root=root, data=data_file, images=images, checkpoint=other)


def finetune_config(paths, **overrides):
  config = recipe.apply(finetune.get_config(), {**recipe.TINY_MODEL, **recipe.TINY_RUN, **overrides})
  config.checkpoint.init_from = config.train.tokenizer_dir = str(paths["checkpoint"])
  config.data.sources[0].update(dict(path=str(paths["data"]), image_folder=str(paths["images"])))
  return config


def with_source(path_key: str):
  def make(paths):
    config = finetune_config(paths)
    config.data.sources[0].path = str(paths["root"] / path_key) if "." in path_key else str(paths[path_key])
    return "run", config
  return make


def changed(**overrides):
  return lambda paths: ("run", finetune_config(paths, **overrides))


def train_argv(*extra):
  return lambda paths: ("cli", ["-m", "lladav_jax.train", "--config", "configs/tiny.py",
                                "--workdir", str(paths["root"] / "run"), *extra])


def unset_init_from(paths):
  config = finetune_config(paths)
  config.checkpoint.init_from = None
  return "run", config


def no_image_folder(paths):
  config = finetune_config(paths, **{"train.num_steps": 20})
  config.data.sources[0].image_folder = str(paths["root"] / "wrong-folder")
  return "run", config


def other_checkpoint_size(paths):
  config = finetune_config(paths)
  config.model.text.hidden_size = 64
  return "run", config


CASES = [
    Case("no `--workdir`", 2, "flag --workdir=None: Flag --workdir must have a value other than None.",
         lambda paths: ("cli", ["-m", "lladav_jax.train", "--config", "configs/tiny.py"])),
    Case("a `--config` file that does not exist", 2, "--config … no such file",
         lambda paths: ("cli", ["-m", "lladav_jax.train", "--config", "configs/nothing.py", "--workdir", "x"])),
    Case("a config file that fails to load", 2, "--config …syntax.py: SyntaxError: invalid syntax (syntax.py, line 1)",
         lambda paths: ("cli", ["-m", "lladav_jax.train", "--config", str(paths["root"] / "syntax.py"),
                                "--workdir", "x"])),
    Case("an override of a field the config lacks", 2,
         '--config.data.srces: configs/tiny.py has no such field (did you mean "sources"?)',
         train_argv("--config.data.srces=1")),
    Case("an override value of the wrong type", 2, "flag --config.train.num_steps=abc: invalid literal for int() …",
         train_argv("--config.train.num_steps=abc")),
    Case("`train.global_batch_size` 0", 1, "config.train.global_batch_size = 0: must be at least 1",
         changed(**{"train.global_batch_size": 0})),
    Case("a batch that `train.micro_batches` does not divide", 1,
         "config.train.global_batch_size = 2: is not divisible by config.train.micro_batches = 3",
         changed(**{"train.micro_batches": 3})),
    Case("a micro-batch the mesh's batch shards do not divide", 1,
         "config.train.global_batch_size = 2: a micro-batch of 1 rows … cannot be split over the 2 batch shards …",
         lambda paths: ("cli", ["-m", "lladav_jax.train", "--config", "configs/tiny.py", "--workdir",
                                str(paths["root"] / "run"), "--config.train.global_batch_size=2",
                                "--config.train.micro_batches=2"], 2)),
    Case("a batch larger than the data", 1,
         "config.train.global_batch_size = 16: the data's 8 examples make no full batch …",
         changed(**{"train.global_batch_size": 16, "train.num_steps": 0})),
    Case("a recipe's `checkpoint.init_from` not given", 1, "config.checkpoint.init_from is not set: …",
         unset_init_from),
    Case("`checkpoint.init_from` that is not a checkpoint", 1,
         "config.checkpoint.init_from = '…': …: neither a converted checkpoint …",
         lambda paths: ("run", recipe.apply(finetune_config(paths), {"checkpoint.init_from": str(paths["root"])}))),
    Case("`checkpoint.init_from` of another size", 1,
         "config.checkpoint.init_from … does not fit the run config's model: "
         "model.text.hidden_size: 32 in the checkpoint, 64 in the run config",
         other_checkpoint_size),
    Case("a tokenizer directory without tokenizer.json", 1, "…: no tokenizer.json …",
         lambda paths: ("run", recipe.apply(finetune_config(paths), {"train.tokenizer_dir": str(paths["root"])}))),
    Case("an empty data path", 1, "config.data.sources[0].path = '': is empty: …",
         lambda paths: ("run", recipe.apply(finetune_config(paths), {"data.sources": [{"path": ""}]}))),
    Case("a data file that does not exist", 1, "data file …missing.json: No such file or directory",
         with_source("missing.json")),
    Case("a directory as the data file", 1, "data file …: Is a directory", with_source("images")),
    Case("a truncated data file", 1, "…truncated.json: the top-level JSON array is not closed (truncated file?)",
         with_source("truncated.json")),
    Case("a data file without records", 1, "no records in …empty.json", with_source("empty.json")),
    Case("a wrong image folder (more than `data.max_rejected_fraction` rejected)", 1,
         "… records read were rejected, more than data.max_rejected_fraction = 0.1: mostly image_missing "
         "(…; e.g. image file not found: …wrong-folder/picture….png). …",
         no_image_folder),
    Case("`python -m lladav_jax.data` on a missing file", 1, "data file …missing.json: No such file or directory",
         lambda paths: ("cli", ["-m", "lladav_jax.data", str(paths["root"] / "missing.json")])),
    Case("`python -m lladav_jax.data` on a file without records", 1, "…empty.json: no records",
         lambda paths: ("cli", ["-m", "lladav_jax.data", str(paths["root"] / "empty.json")])),
]


def shown_pattern(shown: str) -> str:
  return "error: " + ".*".join(re.escape(part) for part in shown.split("…")) + "$"


def run_case(case: Case, paths, capsys, workdir) -> tuple[int, str]:
  kind, what, *devices = case.make(paths)
  if kind == "cli":
    result = subprocess.run([sys.executable, *what], cwd=ROOT, env=env(*devices), capture_output=True, text=True,
                            timeout=600)
    return result.returncode, result.stderr
  status = train_cli.run(what, str(workdir))
  return status, capsys.readouterr().err


@pytest.mark.parametrize("case", CASES, ids=[case.bad_input for case in CASES])
def test_a_bad_input_gets_one_line_naming_the_culprit(case, paths, capsys, tmp_path):
  status, stderr = run_case(case, paths, capsys, tmp_path / "run")
  assert status == case.exit_status, stderr[-3000:]
  errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
  assert len(errors) == 1 and re.match(shown_pattern(case.shown), errors[0]), stderr[-3000:]
  assert "Traceback" not in stderr, stderr[-3000:]


def docs_rows() -> list[tuple[str, int, str]]:
  text = DOCS.read_text()
  table = text[text.index("## Bad input"):].split("\n\n")[1]
  rows = []
  for line in table.splitlines()[2:]:
    bad_input, exit_status, shown = (cell.strip() for cell in line.strip("|").split(" | "))
    rows.append((bad_input, int(exit_status), shown.strip("`")))
  return rows


def test_the_docs_table_lists_every_case():
  assert docs_rows() == [(case.bad_input, case.exit_status, case.shown) for case in CASES]


def test_an_unexpected_error_keeps_its_traceback(monkeypatch, paths):
  from lladav_jax.train import loop

  def broken(config, workdir):
    raise RuntimeError("a bug")

  monkeypatch.setattr(loop, "train", broken)
  with pytest.raises(RuntimeError, match="a bug"):
    train_cli.run(finetune_config(paths), str(paths["root"] / "run"))

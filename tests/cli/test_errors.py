"""Expected failures of the command lines: one line on stderr naming the culprit, a non-zero exit, no
traceback, and nothing read or written before the inputs are checked."""

import json
import subprocess
import sys

import pytest

from lladav_jax import generate
from lladav_jax.eval import __main__ as eval_cli
from tests.eval import common


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  root = common.make_checkpoint(tmp_path_factory.mktemp("ckpt"))
  (root / "picture.png").write_bytes(common.png_bytes(30, 20))
  (root / "notes.txt").write_text("not an image")
  return root


@pytest.fixture
def no_weights(monkeypatch):
  """Reading the weights fails the test: the inputs must be refused before that."""
  def refuse(*args, **kwargs):
    raise AssertionError("the weights were read before the inputs were checked")
  monkeypatch.setattr(generate, "load_pretrained", refuse)
  monkeypatch.setattr("lladav_jax.checkpoints.pretrained.load_pretrained", refuse)


def one_line_error(capsys, code, excinfo) -> str:
  err = capsys.readouterr().err
  assert excinfo.value.code == code
  lines = err.strip().splitlines()
  assert len(lines) == 1 and "Traceback" not in err, err
  return lines[0]


GENERATE_CASES = {
    "settings": (["--gen-length", "10", "--block-length", "4"], 1,
                 "error: sampler settings: gen_length 10 is not divisible by block_length 4"),
    "missing image": (["--image", "{root}/nowhere.png"], 1, "error: image file not found: {root}/nowhere.png"),
    "not an image": (["--image", "{root}/notes.txt"], 1, "error: cannot decode image {root}/notes.txt"),
    "trace file": (["--trace-file", "trace.txt"], 2, "error: --trace-file trace.txt: trace pictures are .html or .png"),
    "choice": (["--cache", "sometimes"], 2, "error: argument --cache: invalid choice: 'sometimes'"),
    "threshold": (["--threshold", "1.5"], 1, "error: sampler settings: threshold must be in (0, 1], got 1.5"),
    "transfer ratio": (["--cache", "dllm", "--transfer-ratio", "2"], 1,
                       "error: sampler settings: transfer_ratio must be in [0, 1], got 2.0"),
    "prompt refresh without dllm": (["--prompt-refresh", "5"], 1,
                                    "error: sampler settings: prompt_refresh is a setting of cache 'dllm'"),
}


@pytest.mark.parametrize("case", GENERATE_CASES)
def test_generate_refuses_bad_flags_in_one_line(case, checkpoint, capsys, no_weights):
  flags, code, expected = GENERATE_CASES[case]
  flags = [f.format(root=checkpoint) for f in flags]
  with pytest.raises(SystemExit) as excinfo:
    generate.main(["--checkpoint", str(checkpoint), "--prompt", "hi", *flags])
  assert expected.format(root=checkpoint) in one_line_error(capsys, code, excinfo)


def test_generate_names_a_directory_that_is_not_a_checkpoint(tmp_path, capsys, no_weights):
  for path, expected in ((tmp_path, "neither a converted checkpoint"), (tmp_path / "gone", "no such directory")):
    with pytest.raises(SystemExit) as excinfo:
      generate.main(["--checkpoint", str(path), "--prompt", "hi"])
    line = one_line_error(capsys, 1, excinfo)
    assert str(path) in line and expected in line


def test_generate_names_a_tokenizer_that_does_not_fit(checkpoint, tmp_path, capsys, no_weights):
  from tests.data.tiny_tokenizer import save_tokenizer_dir
  other = save_tokenizer_dir(str(tmp_path))  # LLaDA-8B's special ids, not the tiny model's
  with pytest.raises(SystemExit) as excinfo:
    generate.main(["--checkpoint", str(checkpoint), "--tokenizer", str(other), "--prompt", "hi"])
  assert "the model config expects" in one_line_error(capsys, 1, excinfo)


def test_help_shows_every_default():
  out = subprocess.run([sys.executable, "-m", "lladav_jax.generate", "--help"], capture_output=True, text=True,
                       check=True).stdout
  flat = " ".join(out.split())
  for expected in ("--temperature TEMPERATURE 0: the argmax; > 0: sampling (default: 0.0)",
                   "every layer's features) (default: none)", "random remasking (default: 0)",
                   "the first stop found (default: upstream)"):
    assert expected in flat, expected
  options = [line for line in out.splitlines() if line.startswith("  -")]
  assert all("--" in line for line in options) and len(options) > 20
  assert "(default: 128, no stop string, no think tag)" in flat  # the lengths say where theirs come from


@pytest.fixture(scope="module")
def questions(tmp_path_factory):
  root = tmp_path_factory.mktemp("data")
  (root / "a.png").write_bytes(common.png_bytes(24, 16))
  data = root / "q.jsonl"
  data.write_text("".join(json.dumps({"id": f"q{i}", "image": "a.png", "question": f"What? {i}",
                                      "options": ["red", "green"], "answer": "A"}) + "\n" for i in range(3)))
  return data


def eval_args(checkpoint, data, out, *extra):
  return ["--checkpoint", str(checkpoint), "--task", "jsonl", "--data", str(data), "--output", str(out),
          "--no-progress", *extra]


EVAL_CASES = {
    "batch size": (["--batch-size", "0"], 2, "error: --batch-size must be >= 1, got 0"),
    "settings": (["--gen-length", "3", "--block-length", "2"], 1,
                 "error: sampler settings: gen_length 3 is not divisible by block_length 2"),
    "mesh": (["--mesh", "data=two"], 1, "error: --mesh: mesh 'data=two'"),
}


@pytest.mark.parametrize("case", EVAL_CASES)
def test_eval_refuses_bad_flags_before_writing(case, checkpoint, questions, tmp_path, capsys, no_weights):
  flags, code, expected = EVAL_CASES[case]
  out = tmp_path / "out"
  with pytest.raises(SystemExit) as excinfo:
    eval_cli.main(eval_args(checkpoint, questions, out, *flags))
  assert expected in one_line_error(capsys, code, excinfo)
  assert not out.exists()  # nothing written: the corrected command starts afresh, no --overwrite needed


def test_eval_names_missing_data_and_bad_checkpoints(checkpoint, questions, tmp_path, capsys, no_weights):
  with pytest.raises(SystemExit) as excinfo:
    eval_cli.main(eval_args(checkpoint, tmp_path / "nope.jsonl", tmp_path / "out"))
  assert "nope.jsonl" in one_line_error(capsys, 1, excinfo)
  with pytest.raises(SystemExit) as excinfo:
    eval_cli.main(eval_args(tmp_path, questions, tmp_path / "out"))
  assert "neither a converted checkpoint" in one_line_error(capsys, 1, excinfo)
  assert not (tmp_path / "out").exists()


def test_a_corrected_eval_command_runs_without_overwrite(checkpoint, questions, tmp_path, capsys):
  out = tmp_path / "out"
  with pytest.raises(SystemExit):
    eval_cli.main(eval_args(checkpoint, questions, out, "--gen-length", "3", "--block-length", "2"))
  summary = eval_cli.main(eval_args(checkpoint, questions, out, "--gen-length", "4", "--block-length", "2",
                                    "--steps", "2"))
  assert summary["num_scored"] == 3


def test_generate_names_a_prompt_too_long_for_the_model(checkpoint, capsys):
  with pytest.raises(SystemExit) as excinfo:
    generate.main(["--checkpoint", str(checkpoint), "--prompt", "hi", "--gen-length", "100000", "--steps", "1"])
  line = one_line_error(capsys, 1, excinfo)
  assert "gen_length 100000" in line and "exceeds the maximum length" in line

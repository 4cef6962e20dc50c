"""The demo's steps, each reusing what an earlier run left in the workdir.

The run configs are read by path from the checkout's configs/demo_stage{1,2}.py (as the train command
line reads `--config`); image size, vocabulary and system prompt come from them.
"""

import collections
import dataclasses
import json
import pathlib

from ml_collections import ConfigDict

from lladav_jax import run_config
from lladav_jax.data.chat_format import DEFAULT_SYSTEM_PROMPT
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.demo import evaluate, shapes
from lladav_jax.demo import tokenizer as demo_tokenizer
from lladav_jax.demo.evaluate import GEN_LENGTH, Prediction

__all__ = ["GEN_LENGTH", "DemoWorkdir", "Prediction", "accuracy_json", "accuracy_table", "blind_baseline",
           "evaluate_heldout", "generate_args", "make_data", "make_tokenizer", "record_image", "stage_config",
           "train_stage"]

# The checkout's configs/ (the package lives in <checkout>/lladav_jax/demo/).
CONFIG_DIR = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _stage_file_config(config_dir: pathlib.Path, stage: int) -> ConfigDict:
  path = config_dir / f"demo_stage{stage}.py"
  if not path.is_file():
    raise FileNotFoundError(f"{path}: the demo's run configs are not there; run the demo from a checkout "
                            "(make demo) or pass its configs/ directory (--config-dir)")
  return run_config.load_config_file(str(path))


@dataclasses.dataclass(frozen=True)
class DemoWorkdir:
  """Where everything goes, how big the data is, and which run configs train it."""

  root: pathlib.Path
  num_train: int = 3000
  num_val: int = 300
  stage_steps: tuple[int, int] | None = None  # None: the stage configs' num_steps
  config_dir: pathlib.Path = CONFIG_DIR

  @property
  def data_dir(self) -> pathlib.Path:
    return self.root / "data"

  @property
  def tokenizer_dir(self) -> pathlib.Path:
    return self.root / "tokenizer"

  def stage_dir(self, stage: int) -> pathlib.Path:
    return self.root / f"stage{stage}"

  @property
  def image_size(self) -> int:
    """The generated images are one crop of the demo model."""
    return _stage_file_config(self.config_dir, 1).model.vision.image_size

  @property
  def vocab_size(self) -> int:
    return _stage_file_config(self.config_dir, 1).model.text.vocab_size

  @property
  def system_prompt(self) -> str:
    """The system prompt of training, which the prompts at inference must use too."""
    return _stage_file_config(self.config_dir, 2).data.system_prompt


def make_data(work: DemoWorkdir) -> dict[str, int]:
  """Generates the data once; a later run with the same settings reuses it, other settings are an error."""
  files = {k: work.data_dir / f"{k}.json" for k in ("captions_train", "vqa_train", "vqa_val")}
  settings = {"num_train": work.num_train, "num_val": work.num_val, "image_size": work.image_size,
              "generator": shapes.GENERATOR_VERSION}
  stamp = work.data_dir / "settings.json"
  if stamp.is_file() and json.loads(stamp.read_text()) != settings:
    raise ValueError(f"{work.data_dir} was generated with {stamp.read_text()}, not {settings}: "
                     f"use another workdir or --fresh")
  if not stamp.is_file() or not all(f.is_file() for f in files.values()):
    shapes.generate(work.data_dir, num_train=work.num_train, num_val=work.num_val, image_size=work.image_size)
    stamp.write_text(json.dumps(settings))
  return {k: len(json.loads(f.read_text())) for k, f in files.items()}


def make_tokenizer(work: DemoWorkdir) -> int:
  if not (work.tokenizer_dir / "tokenizer.json").is_file():
    corpus = [DEFAULT_SYSTEM_PROMPT, work.system_prompt]
    for name in ("captions_train", "vqa_train"):
      for record in json.loads((work.data_dir / f"{name}.json").read_text()):
        corpus += [m["value"].replace("<image>", "") for m in record["conversations"]]
    demo_tokenizer.save(work.tokenizer_dir, corpus, work.vocab_size)
  return len(Tokenizer.from_dir(work.tokenizer_dir))


def stage_config(work: DemoWorkdir, stage: int):
  """The stage's run config (configs/demo_stage{1,2}.py) with the paths of this workdir."""
  config = _stage_file_config(work.config_dir, stage)
  config.data.sources = [dict(source, path=str(work.data_dir / pathlib.Path(source["path"]).name),
                              image_folder=str(work.data_dir)) for source in config.data.sources]
  config.data.rejects_dir = str(work.root / "rejects")
  config.train.tokenizer_dir = str(work.tokenizer_dir)
  if stage == 2:
    config.checkpoint.init_from = str(work.stage_dir(1))
  if work.stage_steps is not None:
    config.train.num_steps = work.stage_steps[stage - 1]
  return config


def train_stage(work: DemoWorkdir, stage: int) -> dict[int, dict]:
  """Trains (or resumes, or finds finished) one stage; returns the metrics logged by this run."""
  from lladav_jax.train import loop
  return loop.train(stage_config(work, stage), str(work.stage_dir(stage)))


def evaluate_heldout(work: DemoWorkdir, limit: int | None = None, dtype: str = "float32") -> list[Prediction]:
  return evaluate.evaluate(str(work.stage_dir(2)), str(work.data_dir / "vqa_val.json"), str(work.data_dir),
                           system_prompt=work.system_prompt, limit=limit, dtype=dtype)


def accuracy_json(predictions) -> dict[str, dict[str, float]]:
  return {k: {"correct": c, "total": n, "accuracy": c / n}
          for k, (c, n) in evaluate.accuracy_by_type(predictions).items()}


def blind_baseline(work: DemoWorkdir, predictions) -> dict[str, float]:
  """Per question type, the accuracy of always giving the training set's most common answer to
  that question: what a model that ignores the image can reach."""
  common: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for record in json.loads((work.data_dir / "vqa_train.json").read_text()):
    turns = record["conversations"]
    for question, answer in zip(turns[::2], turns[1::2]):
      common[question["value"].replace("<image>", "").strip()][answer["value"]] += 1
  hits: dict[str, list[bool]] = collections.defaultdict(list)
  for p in predictions:
    guess = common[p.question].most_common(1)[0][0] if common[p.question] else ""
    for key in (p.question_type, "all"):
      hits[key].append(evaluate.is_match(guess, p.answer))
  return {kind: sum(h) / len(h) for kind, h in hits.items()}


def accuracy_table(predictions, baseline: dict[str, float]) -> list[str]:
  lines = [f"{'question type':14s} {'accuracy':>9s}  {'correct':>11s}  without the image"]
  for kind, (correct, total) in evaluate.accuracy_by_type(predictions).items():
    blind = f"{baseline[kind]:.0%}" if kind in baseline else ""
    lines.append(f"{kind:14s} {correct / total:9.1%}  {correct:5d} / {total:<5d} {blind}")
  return lines


def record_image(work: DemoWorkdir, record_id: str) -> str:
  for record in json.loads((work.data_dir / "vqa_val.json").read_text()):
    if record["id"] == record_id:
      return record["image"]
  raise KeyError(record_id)


def generate_args(work: DemoWorkdir, image: str | pathlib.Path, question: str) -> list[str]:
  """The generate CLI's arguments that ask the trained demo model about one image, as evaluated."""
  n = str(GEN_LENGTH)
  return ["--checkpoint", str(work.stage_dir(2)), "--image", str(image), "--prompt", question,
          "--gen-length", n, "--steps", n, "--block-length", n, "--keep-image-newline",
          "--system-prompt", work.system_prompt, "--trace"]


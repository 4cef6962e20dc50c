"""The demo's steps, each reusing what an earlier run left in the workdir."""

import collections
import dataclasses
import json
import pathlib

from configs import demo, demo_stage1, demo_stage2
from lladav_jax.data.chat_format import DEFAULT_SYSTEM_PROMPT
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.demo import evaluate, shapes
from lladav_jax.demo import tokenizer as demo_tokenizer
from lladav_jax.demo.evaluate import GEN_LENGTH, Prediction

__all__ = ["GEN_LENGTH", "DemoPlan", "Prediction", "accuracy_json", "accuracy_table", "blind_baseline",
           "evaluate_heldout", "generate_args", "make_data", "make_tokenizer", "record_image", "show_trace",
           "stage_config", "train_stage"]


@dataclasses.dataclass(frozen=True)
class DemoPlan:
  """Where everything goes and how big it is."""

  root: pathlib.Path
  num_train: int = 3000
  num_val: int = 300
  image_size: int = demo.IMAGE_SIZE  # one crop of the demo model
  vocab_size: int = demo.VOCAB_SIZE
  stage_steps: tuple[int, int] | None = None  # None: the stage configs' num_steps

  @property
  def data_dir(self) -> pathlib.Path:
    return self.root / "data"

  @property
  def tokenizer_dir(self) -> pathlib.Path:
    return self.root / "tokenizer"

  def stage_dir(self, stage: int) -> pathlib.Path:
    return self.root / f"stage{stage}"


def make_data(plan: DemoPlan) -> dict[str, int]:
  """Generates the data once; a later run with the same settings reuses it, other settings are an error."""
  files = {k: plan.data_dir / f"{k}.json" for k in ("captions_train", "vqa_train", "vqa_val")}
  settings = {"num_train": plan.num_train, "num_val": plan.num_val, "image_size": plan.image_size,
              "generator": shapes.GENERATOR_VERSION}
  stamp = plan.data_dir / "settings.json"
  if stamp.is_file() and json.loads(stamp.read_text()) != settings:
    raise ValueError(f"{plan.data_dir} was generated with {stamp.read_text()}, not {settings}: "
                     f"use another workdir or --fresh")
  if not stamp.is_file() or not all(f.is_file() for f in files.values()):
    shapes.generate(plan.data_dir, num_train=plan.num_train, num_val=plan.num_val, image_size=plan.image_size)
    stamp.write_text(json.dumps(settings))
  return {k: len(json.loads(f.read_text())) for k, f in files.items()}


def make_tokenizer(plan: DemoPlan) -> int:
  if not (plan.tokenizer_dir / "tokenizer.json").is_file():
    corpus = [DEFAULT_SYSTEM_PROMPT, demo.SYSTEM_PROMPT]
    for name in ("captions_train", "vqa_train"):
      for record in json.loads((plan.data_dir / f"{name}.json").read_text()):
        corpus += [m["value"].replace("<image>", "") for m in record["conversations"]]
    demo_tokenizer.save(plan.tokenizer_dir, corpus, plan.vocab_size)
  return len(Tokenizer.from_dir(plan.tokenizer_dir))


def stage_config(plan: DemoPlan, stage: int):
  """The stage's run config (configs/demo_stage{1,2}.py) with the paths of this workdir."""
  config = (demo_stage1 if stage == 1 else demo_stage2).get_config()
  config.data.sources = [dict(source, path=str(plan.data_dir / pathlib.Path(source["path"]).name),
                              image_folder=str(plan.data_dir)) for source in config.data.sources]
  config.data.rejects_dir = str(plan.root / "rejects")
  config.train.tokenizer_dir = str(plan.tokenizer_dir)
  if stage == 2:
    config.checkpoint.init_from = str(plan.stage_dir(1))
  if plan.stage_steps is not None:
    config.train.num_steps = plan.stage_steps[stage - 1]
  return config


def train_stage(plan: DemoPlan, stage: int) -> dict[int, dict]:
  """Trains (or resumes, or finds finished) one stage; returns the metrics logged by this run."""
  from lladav_jax.train import loop
  return loop.train(stage_config(plan, stage), str(plan.stage_dir(stage)))


def evaluate_heldout(plan: DemoPlan, limit: int | None = None) -> list[Prediction]:
  return evaluate.evaluate(str(plan.stage_dir(2)), str(plan.data_dir / "vqa_val.json"), str(plan.data_dir),
                           system_prompt=demo.SYSTEM_PROMPT, limit=limit)


def accuracy_json(predictions) -> dict[str, dict[str, float]]:
  return {k: {"correct": c, "total": n, "accuracy": c / n}
          for k, (c, n) in evaluate.accuracy_by_type(predictions).items()}


def blind_baseline(plan: DemoPlan, predictions) -> dict[str, float]:
  """Per question type, the accuracy of always giving the training set's most common answer to
  that question: what a model that ignores the image can reach."""
  common: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
  for record in json.loads((plan.data_dir / "vqa_train.json").read_text()):
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


def record_image(plan: DemoPlan, record_id: str) -> str:
  for record in json.loads((plan.data_dir / "vqa_val.json").read_text()):
    if record["id"] == record_id:
      return record["image"]
  raise KeyError(record_id)


def generate_args(plan: DemoPlan, image: str | pathlib.Path, question: str) -> list[str]:
  """The generate CLI's arguments that ask the trained demo model about one image, as evaluated."""
  n = str(GEN_LENGTH)
  return ["--checkpoint", str(plan.stage_dir(2)), "--image", str(image), "--prompt", question,
          "--gen-length", n, "--steps", n, "--block-length", n, "--keep-image-newline",
          "--system-prompt", demo.SYSTEM_PROMPT, "--trace"]


def show_trace(plan: DemoPlan, image: pathlib.Path, question: str) -> None:
  """The generate CLI on one held-out question, with --trace and an HTML picture."""
  from lladav_jax import generate
  generate.main(generate_args(plan, image, question) + ["--trace-file", str(plan.root / "trace.html")])

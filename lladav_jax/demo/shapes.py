"""A synthetic visual question-answering task drawn with PIL, written in the LLaVA JSON format.

Each image holds one to four coloured shapes (circle, square, triangle) in the cells of a 3 x 3
grid on a light background. Stage-1 records caption the scene ("a red circle and two blue
squares."); stage-2 records ask one question about it:
  color:    "What color is the triangle?"            -> "red"        (the shape occurs once)
  count:    "How many circles are there?"            -> "two"
  position: "Is the square left of the circle?"      -> "yes" / "no" (both occur once, other columns)
Scenes are generated from a seed, so a directory is reproducible and can be reused.
"""

import dataclasses
import json
import os
import pathlib
import random

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLORS = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (230, 200, 30)}
NUMBER_WORDS = ("zero", "one", "two", "three", "four")
QUESTION_TYPES = ("color", "count", "position")
BACKGROUND = (245, 245, 240)
GENERATOR_VERSION = 4  # bump when the generated data changes, so that old workdirs are not reused


@dataclasses.dataclass(frozen=True)
class Item:
  shape: str
  color: str
  x: int  # centre
  y: int
  radius: int


def _plural(shape: str, n: int) -> str:
  return shape if n == 1 else shape + "s"


def random_scene(rng: random.Random, size: int, max_items: int = 4, grid: int = 3) -> list[Item]:
  """1..max_items shapes in distinct cells of a grid x grid layout on a size x size canvas.

  Cells are the demo's 28 px patches (84 px / 3), so each patch shows one whole shape: the tiny vision
  tower trained from scratch learns shapes in minutes instead of having to recognise them at every
  sub-patch offset.
  """
  cell = size // grid
  cells = rng.sample(range(grid * grid), rng.randint(1, max_items))
  return [Item(rng.choice(SHAPES), rng.choice(sorted(COLORS)), (c % grid) * cell + cell // 2,
               (c // grid) * cell + cell // 2, int(cell * 0.4)) for c in cells]


def draw(items: list[Item], size: int) -> Image.Image:
  image = Image.new("RGB", (size, size), BACKGROUND)
  pen = ImageDraw.Draw(image)
  for it in items:
    fill = COLORS[it.color]
    box = (it.x - it.radius, it.y - it.radius, it.x + it.radius, it.y + it.radius)
    if it.shape == "circle":
      pen.ellipse(box, fill=fill)
    elif it.shape == "square":
      pen.rectangle(box, fill=fill)
    else:
      pen.polygon([(it.x, it.y - it.radius), (it.x - it.radius, it.y + it.radius),
                   (it.x + it.radius, it.y + it.radius)], fill=fill)
  return image


def caption(items: list[Item]) -> str:
  """Groups in a fixed shape order, then by colour. Ordering by colour instead would let a model
  write every colour word from the set of colours alone; this way the colours need the shapes."""
  groups: dict[tuple[str, str], int] = {}
  for it in items:
    groups[(it.color, it.shape)] = groups.get((it.color, it.shape), 0) + 1
  parts = [f"{'a' if n == 1 else NUMBER_WORDS[n]} {color} {_plural(shape, n)}"
           for (color, shape), n in sorted(groups.items(), key=lambda kv: (SHAPES.index(kv[0][1]), kv[0][0]))]
  text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
  return text + "."


def questions(items: list[Item]) -> list[tuple[str, str, str]]:
  """Every (type, question, answer) triple this scene answers unambiguously."""
  counts = {s: sum(it.shape == s for it in items) for s in SHAPES}
  singles = {it.shape: it for it in items if counts[it.shape] == 1}
  out = [("color", f"What color is the {shape}?", it.color) for shape, it in singles.items()]
  out += [("count", f"How many {_plural(shape, 2)} are there?", NUMBER_WORDS[counts[shape]]) for shape in SHAPES]
  for a, item_a in singles.items():
    for b, item_b in singles.items():
      if a != b and item_a.x != item_b.x:  # same column: neither is left of the other
        out.append(("position", f"Is the {a} left of the {b}?", "yes" if item_a.x < item_b.x else "no"))
  return out


def _balanced(qas: list[tuple[str, str, str]], n: int, rng: random.Random) -> list[tuple[str, str, str]]:
  """Up to n questions, taking the types in turn so that none crowds out the others."""
  by_type = [[q for q in qas if q[0] == kind] for kind in QUESTION_TYPES]
  for group in by_type:
    rng.shuffle(group)
  rng.shuffle(by_type)
  interleaved = [group[i] for i in range(max(map(len, by_type))) for group in by_type if i < len(group)]
  return interleaved[:n]


def _conversation(qas: list[tuple[str, str, str]]) -> list[dict]:
  turns = []
  for i, (_, question, answer) in enumerate(qas):
    turns += [{"from": "human", "value": ("<image>\n" if i == 0 else "") + question},
              {"from": "gpt", "value": answer}]
  return turns


def generate(out_dir: str | os.PathLike, *, num_train: int = 2000, num_val: int = 200, image_size: int = 84,
             questions_per_record: int = 1, seed: int = 0) -> dict[str, pathlib.Path]:
  """Writes images/ and captions_train.json, vqa_train.json, vqa_val.json under `out_dir`.

  Training records ask one question about their image by default; `questions_per_record` > 1 makes
  conversations of 1 to that many questions, as LLaVA's instruction data has (the demo model learned
  colours worse from those: see docs/demo.md). Held-out records ask one question each, question types
  balanced. Files are written to temporary names and renamed, so an interrupted run leaves no half
  file. Returns the paths of the JSON files.
  """
  out = pathlib.Path(out_dir)
  (out / "images").mkdir(parents=True, exist_ok=True)
  rng = random.Random(seed)
  captions, train, val = [], [], []
  for i in range(num_train):
    items = random_scene(rng, image_size)
    name = f"images/train_{i:06d}.png"
    draw(items, image_size).save(out / name)
    train.append({"id": f"train-{i}", "image": name,
                  "conversations": _conversation(_balanced(questions(items), rng.randint(1, questions_per_record), rng))})
    captions.append({"id": f"cap-{i}", "image": name,
                     "conversations": [{"from": "human", "value": "<image>"},
                                       {"from": "gpt", "value": caption(items)}]})
  for i in range(num_val):
    wanted = QUESTION_TYPES[i % len(QUESTION_TYPES)]
    while True:  # draw scenes until one answers a question of the wanted type
      items = random_scene(rng, image_size)
      choices = [q for q in questions(items) if q[0] == wanted]
      if choices:
        break
    name = f"images/val_{i:06d}.png"
    draw(items, image_size).save(out / name)
    qtype, question, answer = rng.choice(choices)
    val.append({"id": f"val-{i}", "image": name, "conversations": _conversation([(qtype, question, answer)]),
                "question_type": qtype})
  paths = {"captions_train": out / "captions_train.json", "vqa_train": out / "vqa_train.json",
           "vqa_val": out / "vqa_val.json"}
  for key, records in (("captions_train", captions), ("vqa_train", train), ("vqa_val", val)):
    tmp = paths[key].with_suffix(".json.tmp")
    tmp.write_text(json.dumps(records, indent=0))
    tmp.replace(paths[key])
  return paths


def vocabulary() -> list[str]:
  """Every word the task's questions, answers and captions use (for the demo tokenizer)."""
  words = set(SHAPES) | {_plural(s, 2) for s in SHAPES} | set(COLORS) | set(NUMBER_WORDS)
  words |= {"what", "color", "is", "the", "how", "many", "are", "there", "left", "of", "yes", "no", "a", "and",
            "What", "How", "Is", "?", ".", ","}
  return sorted(words)

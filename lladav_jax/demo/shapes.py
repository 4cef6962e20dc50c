"""A synthetic visual question-answering task drawn with PIL, written in the LLaVA JSON format.

Each image holds a few coloured shapes (circle, square, triangle) on a light background. Stage-1
records caption the scene ("a red circle and two blue squares."); stage-2 records ask about it:
  color:    "What color is the triangle?"            -> "red"        (the shape occurs once)
  count:    "How many circles are there?"            -> "two"
  position: "Is the square left of the circle?"      -> "yes" / "no" (both occur once)
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


@dataclasses.dataclass(frozen=True)
class Item:
  shape: str
  color: str
  x: int  # centre
  y: int
  radius: int


def _plural(shape: str, n: int) -> str:
  return shape if n == 1 else shape + "s"


def random_scene(rng: random.Random, size: int, max_items: int = 4) -> list[Item]:
  """Non-overlapping shapes on a size x size canvas."""
  items: list[Item] = []
  radius = size // 9
  attempts = 0
  target = rng.randint(1, max_items)
  while len(items) < target and attempts < 200:
    attempts += 1
    x, y = rng.randint(radius + 2, size - radius - 3), rng.randint(radius + 2, size - radius - 3)
    if all((x - o.x) ** 2 + (y - o.y) ** 2 > (2 * radius + 4) ** 2 for o in items):
      items.append(Item(rng.choice(SHAPES), rng.choice(sorted(COLORS)), x, y, radius))
  return items


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
  groups: dict[tuple[str, str], int] = {}
  for it in items:
    groups[(it.color, it.shape)] = groups.get((it.color, it.shape), 0) + 1
  parts = [f"{'a' if n == 1 else NUMBER_WORDS[n]} {color} {_plural(shape, n)}"
           for (color, shape), n in sorted(groups.items())]
  text = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
  return text + "."


def questions(items: list[Item], rng: random.Random) -> list[tuple[str, str, str]]:
  """All (type, question, answer) triples this scene answers unambiguously; one is sampled later."""
  counts = {s: sum(it.shape == s for it in items) for s in SHAPES}
  out = []
  for shape in SHAPES:
    if counts[shape] == 1:
      color = next(it.color for it in items if it.shape == shape)
      out.append(("color", f"What color is the {shape}?", color))
  shape = rng.choice(SHAPES)
  out.append(("count", f"How many {_plural(shape, 2)} are there?", NUMBER_WORDS[counts[shape]]))
  singles = [s for s in SHAPES if counts[s] == 1]
  if len(singles) >= 2:
    a, b = rng.sample(singles, 2)
    xa = next(it.x for it in items if it.shape == a)
    xb = next(it.x for it in items if it.shape == b)
    if abs(xa - xb) > 4:
      out.append(("position", f"Is the {a} left of the {b}?", "yes" if xa < xb else "no"))
  return out


def _record(record_id: str, image: str, question: str, answer: str, **extra) -> dict:
  return {"id": record_id, "image": image,
          "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                            {"from": "gpt", "value": answer}], **extra}


def generate(out_dir: str | os.PathLike, *, num_train: int = 2000, num_val: int = 200, image_size: int = 112,
             seed: int = 0) -> dict[str, pathlib.Path]:
  """Writes images/ and captions_train.json, vqa_train.json, vqa_val.json under `out_dir`.

  Question types are balanced by cycling through them. Returns the paths of the JSON files.
  Files are written to temporary names and renamed, so an interrupted run leaves no half file.
  """
  out = pathlib.Path(out_dir)
  (out / "images").mkdir(parents=True, exist_ok=True)
  rng = random.Random(seed)
  splits = {"train": num_train, "val": num_val}
  captions, vqa = [], {"train": [], "val": []}
  for split, count in splits.items():
    for i in range(count):
      wanted = QUESTION_TYPES[i % len(QUESTION_TYPES)]
      while True:  # draw scenes until one answers a question of the wanted type
        items = random_scene(rng, image_size)
        choices = [q for q in questions(items, rng) if q[0] == wanted]
        if choices:
          break
      name = f"images/{split}_{i:06d}.png"
      draw(items, image_size).save(out / name)
      qtype, question, answer = rng.choice(choices)
      vqa[split].append(_record(f"{split}-{i}", name, question, answer, question_type=qtype))
      if split == "train":
        captions.append({"id": f"cap-{i}", "image": name,
                         "conversations": [{"from": "human", "value": "<image>"},
                                           {"from": "gpt", "value": caption(items)}]})
  paths = {"captions_train": out / "captions_train.json", "vqa_train": out / "vqa_train.json",
           "vqa_val": out / "vqa_val.json"}
  for key, records in (("captions_train", captions), ("vqa_train", vqa["train"]), ("vqa_val", vqa["val"])):
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

"""The demo's generated task: answers agree with the drawn scene, files are reproducible."""

import json
import random

import numpy as np
import pytest
from PIL import Image

from lladav_jax.demo import pipeline, shapes
from lladav_jax.demo.shapes import Item


def _scene():
  # 84 px, 3 x 3 cells of 28 px: centres at 14, 42, 70.
  return [Item("circle", "red", 14, 14, 11), Item("square", "blue", 70, 42, 11),
          Item("triangle", "green", 70, 70, 11), Item("triangle", "yellow", 42, 70, 11)]


def test_questions_answer_what_the_scene_shows():
  qas = {q: (kind, a) for kind, q, a in shapes.questions(_scene())}
  assert qas["What color is the circle?"] == ("color", "red")
  assert qas["What color is the square?"] == ("color", "blue")
  assert "What color is the triangle?" not in qas  # two triangles: ambiguous
  assert qas["How many triangles are there?"] == ("count", "two")
  assert qas["How many circles are there?"] == ("count", "one")
  assert qas["Is the circle left of the square?"] == ("position", "yes")
  assert qas["Is the square left of the circle?"] == ("position", "no")
  assert not any("triangle left" in q or "the triangle?" in q for q in qas if q.startswith("Is"))


def test_same_column_shapes_get_no_position_question():
  scene = [Item("circle", "red", 42, 14, 11), Item("square", "blue", 42, 70, 11)]
  assert [kind for kind, _, _ in shapes.questions(scene)].count("position") == 0


def test_drawing_puts_each_colour_at_its_shape():
  image = np.asarray(shapes.draw(_scene(), 84))
  for item in _scene():
    assert tuple(image[item.y + 3, item.x]) == shapes.COLORS[item.color], item
  assert tuple(image[0, 0]) == shapes.BACKGROUND
  assert tuple(image[42, 42]) == shapes.BACKGROUND  # empty centre cell


def test_scenes_use_distinct_grid_cells():
  rng = random.Random(1)
  for _ in range(200):
    items = shapes.random_scene(rng, 84)
    assert 1 <= len(items) <= 4
    cells = {(it.x, it.y) for it in items}
    assert len(cells) == len(items)
    assert all(it.x % 28 == 14 and it.y % 28 == 14 for it in items)


def test_generated_files(tmp_path):
  paths = shapes.generate(tmp_path / "a", num_train=12, num_val=9, seed=3)
  again = shapes.generate(tmp_path / "b", num_train=12, num_val=9, seed=3)
  for key in paths:
    assert paths[key].read_text() == again[key].read_text()  # reproducible from the seed
  train = json.loads(paths["vqa_train"].read_text())
  val = json.loads(paths["vqa_val"].read_text())
  captions = json.loads(paths["captions_train"].read_text())
  assert len(train) == len(captions) == 12 and len(val) == 9
  assert [r["question_type"] for r in val] == list(shapes.QUESTION_TYPES) * 3
  for record in train + val + captions:
    turns = record["conversations"]
    assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2)
    assert turns[0]["value"].startswith("<image>")
    assert sum("<image>" in t["value"] for t in turns) == 1
    assert Image.open(tmp_path / "a" / record["image"]).size == (84, 84)
  assert all(len(r["conversations"]) == 2 for r in train + val)  # one question each
  assert not list((tmp_path / "a").glob("*.tmp"))


def test_conversations_of_several_questions(tmp_path):
  paths = shapes.generate(tmp_path, num_train=12, num_val=3, questions_per_record=4, seed=3)
  train = json.loads(paths["vqa_train"].read_text())
  lengths = [len(r["conversations"]) // 2 for r in train]
  assert max(lengths) > 1 and max(lengths) <= 4
  for record in train:
    questions = [t["value"].replace("<image>\n", "") for t in record["conversations"][::2]]
    assert len(set(questions)) == len(questions)  # no question asked twice


def test_make_data_reuses_and_refuses_other_settings(tmp_path):
  plan = pipeline.DemoWorkdir(tmp_path, num_train=6, num_val=3)
  assert pipeline.make_data(plan) == {"captions_train": 6, "vqa_train": 6, "vqa_val": 3}
  stamp = (plan.data_dir / "vqa_train.json").stat().st_mtime_ns
  pipeline.make_data(plan)
  assert (plan.data_dir / "vqa_train.json").stat().st_mtime_ns == stamp  # reused, not regenerated
  with pytest.raises(ValueError, match="num_train.*--fresh"):
    pipeline.make_data(pipeline.DemoWorkdir(tmp_path, num_train=7, num_val=3))


def test_blind_baseline_is_the_most_common_training_answer(tmp_path):
  plan = pipeline.DemoWorkdir(tmp_path)
  plan.data_dir.mkdir(parents=True)
  turns = lambda q, a: [{"from": "human", "value": "<image>\n" + q}, {"from": "gpt", "value": a}]
  records = [{"id": str(i), "image": "x.png", "conversations": turns("How many circles are there?", a)}
             for i, a in enumerate(["zero", "zero", "one"])]
  (plan.data_dir / "vqa_train.json").write_text(json.dumps(records))
  P = pipeline.Prediction
  predictions = [P("a", "count", "How many circles are there?", "zero", "one"),
                 P("b", "count", "How many circles are there?", "one", "one"),
                 P("c", "color", "What color is the square?", "red", "red")]
  assert pipeline.blind_baseline(plan, predictions) == {"count": 0.5, "color": 0.0, "all": 1 / 3}

"""The grain pipeline end to end: bad input is skipped, counted and logged without misaligning labels;
shards are disjoint and cover the data; a restored iterator continues with the same next batch."""

import dataclasses
import io
import json
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from lladav_jax.data import DataConfig, SourceSpec, make_data_iterator
from lladav_jax.data.pipeline import DataError
from lladav_jax.tokens import IGNORE_LABEL
from tests import tiny
from tests.data.conftest import CONFIG, conversation, write_json


def _bomb_png(path, side=30000):
  """A valid PNG whose header claims side x side pixels (900 megapixels): decoding it would explode."""
  buf = io.BytesIO()
  Image.new("RGB", (1, 1)).save(buf, "PNG")
  data = bytearray(buf.getvalue())
  data[16:24] = struct.pack(">II", side, side)
  data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
  path.write_bytes(bytes(data))


def _item(i, image=None, **extra):
  """A record whose question names it ("item i:"), so a batch row can be traced back to it."""
  question = f"item {i}: What is this?" + ("<image>" if image is not None else "")
  return conversation(question, f"A cat {i}.", record_id=f"r{i}", image=image, **extra)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  for i, (w, h) in enumerate([(64, 48), (300, 200), (200, 300)]):
    tiny.random_image(w, h, seed=i).save(root / f"img{i}.jpg")
  Image.new("P", (40, 30), 3).save(root / "palette.png", transparency=3)
  Image.new("CMYK", (50, 40), (10, 20, 30, 40)).save(root / "cmyk.jpg")
  (root / "corrupt.jpg").write_bytes((root / "img0.jpg").read_bytes()[:200])
  (root / "garbage.png").write_bytes(b"\x89PNG not really")
  _bomb_png(root / "bomb.png")
  return root


def _ids_in(batch, tokenizer):
  """Record numbers of the rows of a batch (several per row when packed)."""
  found = []
  for row in range(batch["input_ids"].shape[0]):
    segments = batch["segment_ids"][row]
    for s in range(1, segments.max() + 1):
      ids = batch["input_ids"][row][(segments == s) & ~batch["image_mask"][row]]
      found += [int(m) for m in re.findall(r"item (\d+):", tokenizer.decode(ids.tolist()))]
  return found


def _check_alignment(batch):
  """Targets are the tokens themselves (and EOS padding); image tokens are never targets."""
  supervised = batch["labels"] != IGNORE_LABEL
  assert not (supervised & batch["image_mask"]).any()
  np.testing.assert_array_equal(batch["labels"][supervised], batch["input_ids"][supervised])
  assert not (supervised & (batch["segment_ids"] == 0)).any()


def _config(sources, **options):
  # Most of these sources are rejected on purpose: the rejected-fraction limit is off unless a test sets it.
  options = dict(dict(num_workers=0, num_epochs=1, seq_len_buckets=(1024, 2048, 4096), crop_buckets=(4, 40),
                      drop_remainder=False, prefetch_batches=0, max_rejected_fraction=1.0), **options)
  return DataConfig(sources=tuple(sources), **options)


def _run(config, tokenizer, **shard):
  it = make_data_iterator(config, CONFIG, tokenizer, **(shard or dict(shard_index=0, shard_count=1)))
  batches = list(it)
  stats = it.stats()
  it.close()
  return batches, stats


@pytest.mark.filterwarnings("ignore:Palette images with Transparency")  # PIL's note on the palette image
def test_bad_input_is_skipped_counted_and_logged(tmp_path, images, tokenizer):
  good = [_item(0, "img0.jpg"), _item(1, "img1.jpg"), _item(2), _item(3, "palette.png"), _item(4, "cmyk.jpg"),
          {"id": "r5", "image": ["img1.jpg", "img2.jpg"], "conversations": [
              {"from": "human", "value": "item 5: Compare <image> and <image>."}, {"from": "gpt", "value": "Same."}]},
          {"id": "r6", "conversations": [{"role": "user", "content": "item 6: Hi"},
                                         {"role": "assistant", "content": "Hello."}]},
          _item(7) | {"conversations": [
              {"from": "human", "value": "item 7: " + "the cat " * 900}, {"from": "gpt", "value": "Long."}]}]
  bad = {"image_missing": _item(20, "nope.jpg"), "image_corrupt": _item(21, "corrupt.jpg"),
         "bad_record": _item(22) | {"conversations": [{"from": "robot", "value": "x"}]},
         "image_count_mismatch": _item(23, ["img0.jpg", "img1.jpg"]), "no_response": conversation("item 24: Hi", ""),
         "image_too_large": _item(25, "bomb.png")}
  lines = [json.dumps(r) for r in good[:4] + list(bad.values())[:3]] + ["{broken json"] + \
      [json.dumps(r) for r in good[4:] + list(bad.values())[3:]] + [json.dumps(_item(26, "garbage.png"))]
  jsonl = tmp_path / "mix.jsonl"
  jsonl.write_text("\n".join(lines) + "\n")
  config = _config([SourceSpec(str(jsonl), image_folder=str(images))], batch_size=3, max_length=1600,
                   rejects_dir=str(tmp_path / "rejects"), empty_response="skip")
  batches, stats = _run(config, tokenizer)
  expected = dict.fromkeys(bad, 1)
  expected.update(malformed_json=1, image_corrupt=2)
  assert {k: v for k, v in stats.items() if v and k not in ("accepted", "truncated")} == expected
  assert stats["accepted"] == len(good) and stats["truncated"] == 2  # item 7 (text) and item 5 (two images)
  seen = sorted(i for b in batches for i in _ids_in(b, tokenizer))
  assert seen == list(range(len(good)))
  for batch in batches:
    _check_alignment(batch)
  log = [json.loads(line) for line in open(tmp_path / "rejects" / "rejects-process00000-of-00001.jsonl")]
  assert sorted(e["reason"] for e in log) == sorted(list(bad) + ["malformed_json", "image_corrupt"] + ["truncated"] * 2)
  assert {e["id"] for e in log if e["reason"] not in ("malformed_json", "truncated")} == (
      {f"r{i}" for i in range(20, 27)} - {"r24"} | {f"{jsonl}:{lines.index(json.dumps(bad['no_response']))}"})
  assert {e["id"] for e in log if e["reason"] == "truncated"} == {"r5", "r7"}
  assert all(e["source"] == str(jsonl) for e in log)

  skip, skip_stats = _run(_config([SourceSpec(str(jsonl), image_folder=str(images))], batch_size=3, max_length=1600,
                                  overlong="skip", empty_response="skip"), tokenizer)
  assert skip_stats["too_long"] == 2 and skip_stats["accepted"] == len(good) - 2 and skip_stats["truncated"] == 0
  assert sorted(i for b in skip for i in _ids_in(b, tokenizer)) == [0, 1, 2, 3, 4, 6]


def test_empty_answers_and_captions_are_trained_on_unless_skipped(tmp_path, images, tokenizer):
  """Upstream keeps them: the structural tokens (or the caption's separator) are their only targets."""
  source = write_json(tmp_path / "empty.json", [_item(0, "img0.jpg"), conversation("item 1: Hi", "", record_id="r1"),
                                                  conversation("item 2: Hi", " ", record_id="r2")])
  batches, stats = _run(_config([SourceSpec(source, image_folder=str(images))], batch_size=3, padding="masked"),
                        tokenizer)
  assert stats["accepted"] == 3 and stats["no_response"] == 0
  (batch,) = batches
  assistant = tokenizer.token_to_id("assistant")
  assert sorted(_ids_in(batch, tokenizer)) == [0, 1, 2]
  for row in range(3):  # each answer's header and <|eot_id|> are targets, as upstream's preprocess_llada
    supervised = batch["input_ids"][row][(batch["labels"][row] != IGNORE_LABEL) & (batch["segment_ids"][row] == 1)]
    assert supervised[-1] == tokenizer.token_to_id("<|eot_id|>") and assistant in supervised.tolist()
  _, skipped = _run(_config([SourceSpec(source, image_folder=str(images))], batch_size=3,
                            empty_response="skip"), tokenizer)
  assert skipped["accepted"] == 1 and skipped["no_response"] == 2

  caption = write_json(tmp_path / "captions.json", [_item(3, "img1.jpg") | {"conversations": [
      {"from": "human", "value": "<image>"}, {"from": "gpt", "value": ""}]}])
  (batch,), stats = _run(_config([SourceSpec(caption, image_folder=str(images))], template="plain"), tokenizer)
  supervised = batch["input_ids"][0][(batch["labels"][0] != IGNORE_LABEL) & (batch["segment_ids"][0] == 1)]
  assert stats["accepted"] == 1 and supervised[:1].tolist() == tokenizer.encode("\n", add_special_tokens=False)


def _text_dataset(tmp_path, n):
  return write_json(tmp_path / "text.json", [_item(i) for i in range(n)])


def test_shards_are_disjoint_and_cover_the_data_every_epoch(tmp_path, tokenizer):
  path = _text_dataset(tmp_path, 23)
  shards = []
  for index in range(2):
    batches, _ = _run(_config([SourceSpec(path)], batch_size=4, num_epochs=2, seed=3), tokenizer,
                      shard_index=index, shard_count=2)
    assert all(b["input_ids"].shape == (4, 1024) for b in batches)
    shards.append([i for b in batches for i in _ids_in(b, tokenizer)])
  assert sorted(shards[0] + shards[1]) == sorted(list(range(23)) * 2)
  # Shard p reads records p, p + 2, ... of the shuffled 2-epoch stream: 12 + 11 and 11 + 12 of them.
  epochs = [(shards[0][:12], shards[0][12:]), (shards[1][:11], shards[1][11:])]
  assert set(epochs[0][0]).isdisjoint(epochs[1][0]) and set(epochs[0][0]) | set(epochs[1][0]) == set(range(23))
  assert set(epochs[0][1]).isdisjoint(epochs[1][1]) and set(epochs[0][1]) | set(epochs[1][1]) == set(range(23))
  assert set(epochs[0][0]) != set(epochs[0][1])  # the second epoch is shuffled anew
  assert all(list(e) != sorted(e) for shard in epochs for e in shard)


def _batches_equal(a, b):
  assert a.keys() == b.keys()
  for key in a:
    np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@pytest.mark.parametrize("options", [
    dict(batch_size=2), dict(batch_size=2, packing=True, padding="masked", seq_len_buckets=(2048,), max_length=2048),
    dict(batch_size=2, num_workers=2, prefetch_batches=2)], ids=["upstream-padding", "packed", "2-workers"])
def test_restored_iterator_continues_with_the_same_next_batch(tmp_path, images, tokenizer, options):
  recs = [_item(i, ["img0.jpg", "img1.jpg", None, "img2.jpg"][i % 4]) for i in range(14)] + [_item(99, "nope.jpg")]
  path = write_json(tmp_path / "data.json", recs)
  config = _config([SourceSpec(path, image_folder=str(images))], num_epochs=None, seed=7, **options)
  it = make_data_iterator(config, CONFIG, tokenizer, shard_index=0, shard_count=1)
  for _ in range(8):  # past the end of the first epoch (and its rejected record)
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # what a checkpoint stores
  expected = [next(it) for _ in range(3)]
  it.close()
  resumed = make_data_iterator(config, CONFIG, tokenizer, shard_index=0, shard_count=1)
  resumed.set_state(state)
  assert resumed.stats() == state["counts"] and state["counts"]["image_missing"] >= 1
  for want in expected:
    _batches_equal(next(resumed), want)
  if options.get("packing"):
    assert any((b["segment_ids"].max(axis=1) > 1).any() for b in expected)
  resumed.close()


def test_a_run_where_everything_is_rejected_stops_with_a_clear_error(tmp_path, tokenizer):
  path = write_json(tmp_path / "data.json", [_item(i, "missing.jpg") for i in range(3)])
  it = make_data_iterator(_config([SourceSpec(path)], num_epochs=None, max_consecutive_rejects=7), CONFIG,
                          tokenizer, shard_index=0, shard_count=1)
  with pytest.raises(DataError, match="7 records in a row were rejected .*image_missing.*image file not found"):
    next(it)
  it.close()


def test_a_sample_left_without_targets_is_rejected(tmp_path, images, tokenizer):
  """A cut that keeps the image and none of the caption leaves nothing to learn from."""
  from lladav_jax.images import load_image
  from lladav_jax.images.crops import image_visual
  from lladav_jax.images.feature_layout import visual_layout
  image_tokens = visual_layout(image_visual(load_image(images / "img0.jpg"), CONFIG), CONFIG).num_tokens
  source = write_json(tmp_path / "captions.json", [_item(0, "img0.jpg") | {"conversations": [
      {"from": "human", "value": "<image>"}, {"from": "gpt", "value": "A cat."}]}])
  for max_length, accepted in ((image_tokens, 0), (image_tokens + 1, 1)):
    _, stats = _run(_config([SourceSpec(source, image_folder=str(images))], template="plain",
                            max_length=max_length), tokenizer)
    assert stats["accepted"] == accepted and stats["no_targets"] == 1 - accepted


def _half_missing(tmp_path, images, records):
  """Records i: text-only when odd, an image when even (missing for every fourth)."""
  items = [_item(i, None if i % 2 else ("img0.jpg" if i % 4 else f"missing{i}.jpg")) for i in range(records)]
  return write_json(tmp_path / "data.json", items)


@pytest.mark.parametrize("records", [16, 240])
def test_too_many_rejects_stop_the_run_naming_the_reason_and_an_example(tmp_path, images, tokenizer, records):
  """25% rejected is over a 0.2 limit: judged after one pass over a small shard, else after
  REJECT_CHECK_RECORDS records, with the main reason and one of its files in the message."""
  from lladav_jax.data.pipeline import REJECT_CHECK_RECORDS
  path = _half_missing(tmp_path, images, records)
  config = _config([SourceSpec(path, image_folder=str(images))], batch_size=2, num_epochs=None, shuffle=False,
                   max_rejected_fraction=0.2, rejects_dir=str(tmp_path / "rejects"))
  it = make_data_iterator(config, CONFIG, tokenizer, shard_index=0, shard_count=1)
  expected = (r"of \d+ records read were rejected, more than data.max_rejected_fraction = 0.2: mostly image_missing "
              r"\(\d+; e.g. image file not found: .*missing0.jpg\)")
  with pytest.raises(DataError, match=expected):
    for _ in range(records):
      next(it)
  stats = it.stats()
  read = stats["accepted"] + stats["image_missing"]
  assert read <= min(REJECT_CHECK_RECORDS, records) + 2 * 2  # no later than the records of the batch in hand
  it.close()
  # Under the limit, the same data trains on.
  config = dataclasses.replace(config, max_rejected_fraction=0.3)
  it = make_data_iterator(config, CONFIG, tokenizer, shard_index=0, shard_count=1)
  for _ in range(records):
    next(it)
  it.check_rejects()
  it.close()


def test_a_short_run_is_judged_at_its_end(tmp_path, images, tokenizer):
  path = _half_missing(tmp_path, images, 240)
  config = _config([SourceSpec(path, image_folder=str(images))], batch_size=2, num_epochs=None, shuffle=False,
                   max_rejected_fraction=0.2)
  it = make_data_iterator(config, CONFIG, tokenizer, shard_index=0, shard_count=1)
  next(it)  # 3 records read, 1 rejected: too few for the pipeline to judge
  with pytest.raises(DataError, match="1 of 3 records read were rejected"):
    it.check_rejects()
  state = json.loads(json.dumps(it.get_state()))
  it.close()
  resumed = make_data_iterator(config, CONFIG, tokenizer, shard_index=0, shard_count=1)
  resumed.set_state(state)  # the counts and the example survive a checkpoint
  with pytest.raises(DataError, match="e.g. image file not found: .*missing0.jpg"):
    resumed.check_rejects()
  resumed.close()

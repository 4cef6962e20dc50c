"""Batches: upstream's padding (against a plain re-run of upstream's collator and splice), shape buckets,
packing (segments never see each other, checked on the model), and re-padding to a larger bucket."""

import functools
import json

import flax.linen as nn
import jax
import numpy as np
import pytest

from lladav_jax.data import ChatEncoder, DataConfig, ExampleBuilder, SourceSpec, pad_batch_to
from lladav_jax.data import batching, records
from lladav_jax.data.examples import sample_from_example
from lladav_jax.images.crops import sample_visuals
from lladav_jax.images.feature_layout import visual_layout
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.models.masks import make_attention_mask
from lladav_jax.samples import model_inputs
from lladav_jax.tokens import IGNORE_LABEL as X, IMAGE_PLACEHOLDER_ID as IMG
from tests import tiny
from tests.data.conftest import CONFIG, conversation

EOS = 126081
SIZES = {"a.jpg": (640, 480), "b.jpg": (300, 200), "c.jpg": (384, 384)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  root = tmp_path_factory.mktemp("images")
  for i, (name, (w, h)) in enumerate(SIZES.items()):
    tiny.random_image(w, h, seed=i).save(root / name)
  return str(root)


RECORDS = [
    conversation("<image>\nWhat is this?", "A cat on the mat.", image="a.jpg"),
    conversation("Hi there!", "Hello."),
    {"image": ["b.jpg", "c.jpg"], "conversations": [{"from": "human", "value": "Compare <image> and <image>."},
                                                    {"from": "gpt", "value": "A red cat and a blue dog."}]},
    conversation("What is the color?<image>", "Red.", image="b.jpg"),
]


def _builder(tokenizer, folder, max_length, **options):
  spec = SourceSpec("unused.json", image_folder=folder)
  config = DataConfig(sources=(spec,), seq_len_buckets=(max_length,), **options)
  return ExampleBuilder([spec], _encoder(tokenizer), CONFIG, config, max_length)


@functools.lru_cache(maxsize=2)
def _encoder(tokenizer):
  return ChatEncoder(tokenizer)


def _examples(builder, recs):
  out = [builder({"source": 0, "index": i, "data": json.dumps(r).encode()}) for i, r in enumerate(recs)]
  assert not [e for e in out if "reject" in e], out
  return out


def _upstream_rows(tokenizer, folder, recs, max_length):
  """What upstream feeds the model for one batch, position by position: ("tok", id), ("img",) or
  ("zero",), with labels. DataCollatorForSupervisedDataset (is_llada): cut at max_length, pad ids AND
  labels with the pad id to the longest; prepare_inputs_labels_for_multimodal: splice image features
  (label IGNORE), cut at max_length, pad with zero embeddings (label IGNORE) to the longest."""
  texts = []
  for r in recs:
    record = records.parse_record(json.dumps(r), "r")
    msgs = records.move_image_to_front(record.messages) if record.has_visual else record.messages
    ids, labels = _encoder(tokenizer).encode_llada(records.llada_turns(record, msgs)[1], has_visual=record.has_visual)
    images = [tiny.random_image(*SIZES[n], seed=list(SIZES).index(n)) for n in record.images]
    counts = [visual_layout(v, CONFIG).num_tokens for v in sample_visuals(images, CONFIG)]
    texts.append((list(ids[:max_length]), list(labels[:max_length]), counts))
  longest = max(len(ids) for ids, _, _ in texts)
  spliced = []
  for ids, labels, counts in texts:
    ids, labels = ids + [EOS] * (longest - len(ids)), labels + [EOS] * (longest - len(labels))
    row, row_labels, images = [], [], iter(counts)
    for t, lab in zip(ids, labels):
      if t == IMG:
        n = next(images)
        row += [("img",)] * n
        row_labels += [X] * n
      else:
        row.append(("tok", t))
        row_labels.append(lab)
    spliced.append((row[:max_length], row_labels[:max_length]))
  longest = max(len(r) for r, _ in spliced)
  return [(r + [("zero",)] * (longest - len(r)), lab + [X] * (longest - len(lab))) for r, lab in spliced]


def _our_rows(batch):
  rows = []
  for b in range(batch["input_ids"].shape[0]):
    n = int((batch["segment_ids"][b] > 0).sum())
    assert (batch["segment_ids"][b, :n] == 1).all() and (batch["segment_ids"][b, n:] == 0).all()
    np.testing.assert_array_equal(batch["positions"][b, :n], np.arange(n))
    kinds = []
    for t in range(n):
      if not batch["image_mask"][b, t]:
        kinds.append(("tok", int(batch["input_ids"][b, t])))
      else:
        kinds.append(("img",) if batch["image_weight"][b, t].sum() > 0 else ("zero",))
    rows.append((kinds, batch["labels"][b, :n].tolist()))
    assert (batch["labels"][b, n:] == X).all()
  return rows


@pytest.mark.parametrize("max_length", [4096, 1600])
def test_upstream_padding_equals_upstream_collator_and_splice(tokenizer, folder, max_length):
  builder = _builder(tokenizer, folder, max_length)
  examples = _examples(builder, RECORDS)
  assert any(bool(e["truncated"]) for e in examples) == (max_length == 1600)
  rows = [[s] for s in batching.upstream_padding(examples, tokenizer.pad_id, max_length)]
  batch = batching.make_batch(rows, 4, (1024, 2048, 4096), (4, 10, 40), CONFIG)
  assert batch["input_ids"].shape == (4, 2048 if max_length == 1600 else 4096) and batch["pixel_values"].shape[1] == 10
  assert _our_rows(batch) == _upstream_rows(tokenizer, folder, RECORDS, max_length)


def test_masked_padding_and_pad_groups(tokenizer, folder):
  builder = _builder(tokenizer, folder, 4096)
  examples = _examples(builder, RECORDS)
  masked = batching.make_batch([[sample_from_example(e)] for e in examples], 4, (4096,), (40,), CONFIG)
  for b, e in enumerate(examples):  # masked padding: exactly the sample, nothing attended after it
    assert (masked["segment_ids"][b] > 0).sum() == len(e["input_ids"])
  groups = [s for g in (examples[:2], examples[2:]) for s in batching.upstream_padding(g, EOS, 4096)]
  upstream = _our_rows(batching.make_batch([[s] for s in groups], 4, (4096,), (40,), CONFIG))
  assert upstream[:2] == _upstream_rows(tokenizer, folder, RECORDS[:2], 4096)
  assert upstream[2:] == _upstream_rows(tokenizer, folder, RECORDS[2:], 4096)


def test_buckets_pick_the_smallest_that_fits():
  assert batching.bucket(1000, (1024, 2048), "x") == 1024 and batching.bucket(0, (0, 4), "y") == 0
  with pytest.raises(ValueError, match="row length 3000 exceeds the largest bucket 2048"):
    batching.bucket(3000, (1024, 2048), "row length")


@functools.lru_cache(maxsize=1)
def _params():
  batch = batching.make_batch([[]], 1, (8,), (1,), tiny.LLADAV)
  return nn.unbox(jax.jit(LLaDAV(tiny.LLADAV, tiny.F32).init)(jax.random.key(0), **model_inputs(batch)))


def _logits(batch):
  """The tiny model (vocabulary 96: ids are folded into it, which keeps every structural property)."""
  inputs = model_inputs(dict(batch, input_ids=batch["input_ids"] % tiny.TEXT.vocab_size))
  return np.asarray(jax.jit(LLaDAV(tiny.LLADAV, tiny.F32).apply)(_params(), **inputs))


def test_packed_segments_never_see_each_other(tokenizer, folder):
  examples = _examples(_builder(tokenizer, folder, 2048, packing=True, padding="masked"),
                       [RECORDS[1], RECORDS[2], conversation("Hello there!", "Hi.")])
  samples = [sample_from_example(e) for e in examples]
  packer = batching.RowPacker(batch_size=1, seq_len=2048, max_crops=2)
  assert all(packer.add(s) for s in samples)
  assert not packer.add(samples[1])  # no room left for a second multi-image sample: the batch is full
  # Three rows (the packed one, then two empty) so that both layouts have one shape: one compilation.
  packed = batching.make_batch(packer.rows, 3, (2048,), (2,), CONFIG)
  lengths = [s.length for s in samples]
  starts = np.cumsum([0] + lengths)
  np.testing.assert_array_equal(packed["segment_ids"][0, :starts[-1]], np.repeat(np.arange(1, 4), lengths))
  np.testing.assert_array_equal(packed["positions"][0, :starts[-1]], np.concatenate([np.arange(n) for n in lengths]))
  mask = np.asarray(make_attention_mask(packed["segment_ids"], None).dense())[0, 0]
  seg = packed["segment_ids"][0]
  assert not (mask & (seg[:, None] != seg[None, :]) & (seg[:, None] > 0)).any()
  alone = batching.make_batch([[s] for s in samples], 3, (2048,), (2,), CONFIG)
  packed_logits, alone_logits = _logits(packed), _logits(alone)
  for i, (start, n) in enumerate(zip(starts, lengths)):
    # Same float32 model on the same inputs; only summation order differs with the row layout.
    np.testing.assert_allclose(packed_logits[0, start:start + n], alone_logits[i, :n], atol=1e-5)


def test_padding_a_batch_to_a_larger_bucket_changes_nothing(tokenizer, folder):
  examples = _examples(_builder(tokenizer, folder, 2048), [RECORDS[3], RECORDS[1]])
  batch = batching.make_batch([[s] for s in batching.upstream_padding(examples, EOS, 2048)], 2, (2048,), (2,),
                              CONFIG)
  bigger = pad_batch_to(batch, 2176, 3, CONFIG)
  assert bigger["pixel_values"].shape[1] == 3 and bigger["input_ids"].shape[1] == 2176
  assert (bigger["segment_ids"][:, 2048:] == 0).all() and (bigger["labels"][:, 2048:] == X).all()
  # The newline slot moved from the end of 2 crops to the end of 3: a wrong index would fetch another
  # feature. Reference gather (design.md): row table = crop features, then the newline vector.
  rng = np.random.default_rng(0)
  features = rng.normal(size=(2, 2 * CONFIG.vision.num_patches, 3))  # per row, per real crop token
  newline = rng.normal(size=3)

  def gathered(b):
    crops = b["pixel_values"].shape[1]
    table = np.zeros((2, crops * CONFIG.vision.num_patches + 1, 3))
    table[:, :features.shape[1]] = features
    table[:, -1] = newline
    picked = np.take_along_axis(table[:, None, :, :], b["image_index"][..., None], axis=2)  # [B, L, 4, 3]
    return (b["image_weight"][..., None] * picked).sum(2) * b["image_mask"][..., None]
  np.testing.assert_array_equal(gathered(bigger)[:, :2048], gathered(batch))
  assert gathered(batch)[batch["image_mask"]].any()

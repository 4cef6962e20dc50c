"""Record indexes of JSON / JSONL files, mixtures and sampling strategies, and record parsing."""

import json
import os
import pickle

import numpy as np
import pytest

from lladav_jax.data import RecordRejected, RecordSource, SourceError, SourceSpec, load_mixture_yaml, parse_record
from lladav_jax.data import records, rejects
from lladav_jax.data.sources import index_path, load_or_build_index, sampled_count, scan_file

# Strings full of JSON syntax, escapes and non-ASCII text: the scanner must skip them whole.
TRICKY = ['he said "]}{[," and left', "back\\slash\\", "ünï ☃ \u2028", "a\\\"b", "[{]}", ""]


def _records(n):
  return [{"id": f"r{i}", "conversations": [{"from": "human", "value": TRICKY[i % len(TRICKY)]},
                                            {"from": "gpt", "value": [None, {"x": [1, {"y": "]"}]}][i % 2] and "ok"}],
           "nested": [[i], {"k": [i, i]}]} for i in range(n)]


@pytest.mark.parametrize("indent", [None, 2])
def test_json_array_index_finds_every_element(tmp_path, indent):
  recs = _records(13) + [7, "a string", None, [1, 2]]  # non-objects are indexed too (rejected when read)
  path = tmp_path / "data.json"
  path.write_text(json.dumps(recs, indent=indent, ensure_ascii=False), encoding="utf-8")
  spans = scan_file(str(path))
  data = path.read_bytes()
  assert [json.loads(data[a:b]) for a, b in spans] == recs


def test_jsonl_index_skips_blank_lines_and_keeps_bad_ones(tmp_path):
  lines = [json.dumps(r) for r in _records(5)]
  text = lines[0] + "\r\n" + "\n\n" + lines[1] + "\n{not json\n" + "\r\n".join(lines[2:]) + "\n\n"
  path = tmp_path / "data.jsonl"
  path.write_text(text, encoding="utf-8")
  data = path.read_bytes()
  got = [data[a:b].decode().strip() for a, b in scan_file(str(path))]
  assert got == [lines[0], lines[1], "{not json"] + lines[2:]


@pytest.mark.parametrize("text,match", [("[{\"a\": 1}, {\"b\": ", "not closed"), ("[1]]", "unbalanced"),
                                        ("[1] [2]", "one top-level JSON array")])
def test_broken_json_files_are_named(tmp_path, text, match):
  path = tmp_path / "broken.json"
  path.write_text(text)
  with pytest.raises(SourceError, match=f"broken.json.*{match}"):
    scan_file(str(path))


def test_index_is_saved_reused_and_rebuilt_when_the_file_changes(tmp_path):
  path = tmp_path / "data.json"
  path.write_text(json.dumps(_records(3)))
  built = load_or_build_index(str(path))
  assert built == index_path(str(path), None) and np.load(built).shape == (3, 2)
  before = os.stat(built).st_mtime_ns
  assert load_or_build_index(str(path)) == built and os.stat(built).st_mtime_ns == before  # reused
  path.write_text(json.dumps(_records(4)))
  os.utime(path, ns=(before + 10**9, before + 10**9))
  assert np.load(load_or_build_index(str(path))).shape == (4, 2)
  elsewhere = load_or_build_index(str(path), index_dir=str(tmp_path / "idx"))
  assert elsewhere.startswith(str(tmp_path / "idx")) and np.load(elsewhere).shape == (4, 2)


def test_mixture_reads_only_the_selected_records(tmp_path):
  a = tmp_path / "a.json"
  a.write_text(json.dumps(_records(10)))
  b = tmp_path / "b.jsonl"
  b.write_text("".join(json.dumps(r) + "\n" for r in _records(20)))
  source = RecordSource([SourceSpec(str(a), sampling="end:3"), SourceSpec(str(b), sampling="random:25%"),
                         SourceSpec(str(a), sampling="first:2")], seed=5)
  assert source.sizes() == [3, 5, 2] and len(source) == 10
  got = [(e["source"], e["index"], json.loads(e["data"])["id"]) for e in (source[i] for i in range(len(source)))]
  assert got[:3] == [(0, 7, "r7"), (0, 8, "r8"), (0, 9, "r9")]
  assert got[8:] == [(2, 0, "r0"), (2, 1, "r1")]
  randoms = [g for g in got if g[0] == 1]
  assert len({g[1] for g in randoms}) == 5 and all(g[2] == f"r{g[1]}" for g in randoms)
  again = RecordSource([SourceSpec(str(a), sampling="end:3"), SourceSpec(str(b), sampling="random:25%"),
                        SourceSpec(str(a), sampling="first:2")], seed=5)
  assert [again[i]["index"] for i in range(10)] == [g[1] for g in got]  # seeded
  clone = pickle.loads(pickle.dumps(source))  # what worker processes get: paths, not the mapped index
  assert len(pickle.dumps(source)) < 20000 and clone[4] == source[4]
  with pytest.raises(IndexError):
    source[10]


def test_sampling_counts_follow_upstream():
  assert [sampled_count(s, 30) for s in ("all", "first:7", "end:100", "random:10%", "random:15%")] == [30, 7, 30, 3, 5]
  with pytest.raises(ValueError, match="sampling strategy 'middle:3'"):
    SourceSpec("x.json", sampling="middle:3")


def test_mixture_yaml_in_upstream_format(tmp_path):
  (tmp_path / "mix.yaml").write_text("datasets:\n  - json_path: a.json\n    sampling_strategy: first:10\n"
                                     "  - json_path: b.json\n    think: no_think\n")
  specs = load_mixture_yaml(str(tmp_path / "mix.yaml"), image_folder="/imgs")
  assert specs == [SourceSpec("a.json", image_folder="/imgs", sampling="first:10"),
                   SourceSpec("b.json", image_folder="/imgs", think="no_think")]


@pytest.mark.parametrize("raw,reason,match", [
    (b"{not json", rejects.MALFORMED_JSON, "not valid JSON"),
    (b"[1, 2]", rejects.MALFORMED_JSON, "expected a JSON object"),
    (b'{"id": 3}', rejects.BAD_RECORD, "record 3: 'conversations'"),
    (b'{"conversations": [{"from": "bot", "value": "x"}]}', rejects.BAD_RECORD, "unknown role 'bot'"),
    (b'{"conversations": [{"from": "human", "value": 5}]}', rejects.BAD_RECORD, "content is not a string"),
    (b'{"conversations": [{"speaker": "human"}]}', rejects.BAD_RECORD, "needs from/value or role/content"),
    (b'{"image": 5, "conversations": [{"from": "human", "value": "x"}]}', rejects.BAD_RECORD, "'image' must be"),
])
def test_bad_records_are_rejected_with_a_reason(raw, reason, match):
  with pytest.raises(RecordRejected, match=match) as e:
    parse_record(raw, "file.json:4")
  assert e.value.reason == reason


def test_record_spellings_and_upstream_text_rules():
  record = parse_record(json.dumps({"image": ["a.jpg", "b.jpg"], "video": "v.mp4", "conversations": [
      {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Compare <image> and <image>"},
      {"role": "assistant", "content": "Same."}]}), "x")
  assert record.images == ("a.jpg", "b.jpg") and record.video is None and record.id == "x"  # image wins
  system, turns = records.llada_turns(record, records.move_image_to_front(record.messages))
  assert system == "Be brief." and [m.role for m in turns] == ["user", "assistant"]
  assert turns[0].content == "Compare <image> and <image>"  # two images: left where they are
  moved = records.move_image_to_front([records.Message("user", "  What is <image> this? QA_GT_caption_based_noisy ")])
  assert moved[0].content == "<image>\nWhat is  this? "  # upstream: strip, then "<image>\n" + text
  tagged = records.add_think_tags([records.Message("user", "Q"), records.Message("assistant", "A")], "no_think", None)
  assert [m.content for m in tagged] == ["Q /no_think", "A"]


def test_llada_turns_reject_mismatched_images_and_keep_empty_answers():
  def turns(obj):
    record = parse_record(json.dumps(obj), "r")
    return records.llada_turns(record, record.messages)
  with pytest.raises(RecordRejected, match="2 <image> placeholder\\(s\\) in the text but 1 image") as e:
    turns({"image": "a.jpg", "conversations": [{"from": "human", "value": "<image><image>"},
                                               {"from": "gpt", "value": "x"}]})
  assert e.value.reason == rejects.IMAGE_COUNT_MISMATCH
  with pytest.raises(RecordRejected, match="0 <image> placeholder\\(s\\) in the text but video"):
    turns({"video": "v.mp4", "conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "x"}]})
  empty = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "  "}]}
  assert [m.role for m in turns(empty)[1]] == ["user", "assistant"]  # kept, as upstream keeps it
  with pytest.raises(RecordRejected, match="no assistant message") as e:
    record = parse_record(json.dumps(empty), "r")
    records.llada_turns(record, record.messages, skip_empty=True)
  assert e.value.reason == rejects.NO_RESPONSE
  caption = parse_record(json.dumps({"conversations": [{"from": "human", "value": "<image>"},
                                                       {"from": "gpt", "value": ""}], "image": "a.jpg"}), "r")
  assert records.plain_pair(caption, caption.messages) == ("<image>", "")
  with pytest.raises(RecordRejected, match="empty caption") as e:
    records.plain_pair(caption, caption.messages, skip_empty=True)
  assert e.value.reason == rejects.NO_RESPONSE
  with pytest.raises(RecordRejected, match="plain format needs 2 messages"):
    records.plain_pair(parse_record(json.dumps({"conversations": [{"from": "human", "value": "<image>"}]}), "r"),
                       [records.Message("user", "<image>")])


def test_data_config_from_a_run_config_section():
  from ml_collections import ConfigDict

  from lladav_jax.data import DataConfig, VideoOptions, data_config
  section = ConfigDict(dict(sources=[dict(path="a.json", image_folder="/imgs", think="no_think")], batch_size=4,
                            crop_buckets=[8, 40], seq_len_buckets=None, video=dict(frames_upbound=8), packing=False))
  config = data_config(section)
  assert config == DataConfig(sources=(SourceSpec("a.json", image_folder="/imgs", think="no_think"),), batch_size=4,
                              crop_buckets=(8, 40), video=VideoOptions(frames_upbound=8))
  assert config.resolved_seq_buckets(config.resolved_max_length(8192)) == (1024, 2048, 4096, 8192)
  with pytest.raises(ValueError, match="packed rows use masked padding"):
    DataConfig(sources=config.sources, packing=True)
  with pytest.raises(ValueError, match="largest sequence bucket 2048 is shorter than the maximum sample length 4096"):
    DataConfig(sources=config.sources, seq_len_buckets=(2048,)).resolved_seq_buckets(4096)

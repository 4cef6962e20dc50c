"""`python -m lladav_jax.generate` end to end on a tiny random LLaDA-V in the Hugging Face layout."""

import dataclasses
import io
import json

import flax.linen as nn
import jax
import numpy as np
import pytest
import safetensors.numpy

from lladav_jax import generate as cli
from lladav_jax.convert import key_map
from lladav_jax.data.prompts import build_chat_prompt, build_prompt
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.demo import tokenizer as demo_tokenizer
from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.images import load_image
from lladav_jax.images.crops import inference_visuals, video_visual
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import build_sample, collate, model_inputs
from tests import tiny

CONFIG = dataclasses.replace(tiny.LLADAV, text=dataclasses.replace(tiny.TEXT, vocab_size=320),
                             tokens=demo_tokenizer.TOKEN_IDS)
SETTINGS = ["--gen-length", "8", "--steps", "8", "--block-length", "4"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
  """A LLaDA-V Hugging Face directory: config.json, safetensors, tokenizer files, and an image."""
  root = tmp_path_factory.mktemp("ckpt")
  corpus = ["What color is the circle?", "red green blue", "How many squares are there?"]
  demo_tokenizer.save(root, corpus, vocab_size=300)
  batch = collate([[build_sample([1, 2], [], CONFIG)]], 4, 1, CONFIG)
  params = nn.unbox(LLaDAV(CONFIG, tiny.F32).init(jax.random.key(0), **model_inputs(batch)))["params"]
  tensors = dict(key_map.params_to_hf(jax.device_get(params), key_map.lladav_entries(CONFIG, scan=True)))
  safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                              str(root / "model.safetensors"))
  (root / "config.json").write_text(json.dumps(CONFIG.to_hf_config()))
  tiny.random_image(300, 200).save(root / "picture.png")
  return root


def _expected_answer(root, question: str) -> str:
  """The same decode through the library: upstream's prompt for one image, default settings."""
  tokenizer = Tokenizer.from_dir(root)
  visuals = inference_visuals([load_image(root / "picture.png")], CONFIG)
  sample = build_sample(build_prompt(tokenizer, question, 1), visuals, CONFIG)
  settings = SamplerSettings(gen_length=8, steps=8, block_length=4, stop_sequences=((CONFIG.tokens.eot,),),
                             vocab_limit=len(tokenizer))
  model = LLaDAV(CONFIG, ComputeConfig(scan_layers=True))
  from lladav_jax import load_pretrained
  _, params = load_pretrained(root)
  answers, _ = generate(model, {"params": params}, [sample], settings)
  return tokenizer.decode([int(t) for t in answers[0]], skip_special_tokens=True).strip()


def test_one_question_with_trace(checkpoint, tmp_path, capsys):
  trace_file = tmp_path / "trace.html"
  cli.main(["--checkpoint", str(checkpoint), "--image", str(checkpoint / "picture.png"),
            "--prompt", "What color is the circle?", *SETTINGS, "--trace", "--trace-file", str(trace_file)])
  out = capsys.readouterr().out.splitlines()
  assert out[-1] == _expected_answer(checkpoint, "What color is the circle?")
  assert out[0].startswith("unmasking order")
  assert 1 <= sum(line.startswith("  ") for line in out) <= 8  # one line per step taken
  assert trace_file.read_text().lstrip().lower().startswith("<!doctype html")


def test_chat_keeps_the_conversation(checkpoint, monkeypatch, capsys, tmp_path):
  monkeypatch.setattr("sys.stdin", io.StringIO("How many squares are there?\n\n"))
  session_prompts = []
  original = cli.build_chat_prompt

  def spy(tokenizer, messages, **kw):
    session_prompts.append([(m.role, m.content) for m in messages])
    return original(tokenizer, messages, **kw)
  monkeypatch.setattr(cli, "build_chat_prompt", spy)
  cli.main(["--checkpoint", str(checkpoint), "--image", str(checkpoint / "picture.png"), "--chat",
            "--prompt", "What color is the circle?", *SETTINGS, "--trace-file", str(tmp_path / "turn.html")])
  out = capsys.readouterr().out
  assert out.count("lladav>") == 2
  # Each turn's trace has its own file, titled with that turn's question.
  assert sorted(p.name for p in tmp_path.iterdir()) == ["turn-1.html", "turn-2.html"]
  assert "How many squares" in (tmp_path / "turn-2.html").read_text()
  first, second = session_prompts
  assert first == [("user", "<image>\nWhat color is the circle?")]
  assert second[:2] == [("user", "<image>\nWhat color is the circle?"), ("assistant", second[1][1])]
  assert second[2] == ("user", "How many squares are there?")
  # The image appears once, in the first turn, as upstream's multi-turn prompts have it.
  ids = build_chat_prompt(Tokenizer.from_dir(checkpoint), [cli.Message(*m) for m in second])
  assert ids.count(-200) == 1


def test_missing_image_and_prompt_are_reported(checkpoint, capsys):
  with pytest.raises(SystemExit):
    cli.main(["--checkpoint", str(checkpoint), "--image", "nowhere.png", "--prompt", "hi"])
  assert capsys.readouterr().err == "error: image file not found: nowhere.png\n"
  with pytest.raises(SystemExit):
    cli.main(["--checkpoint", str(checkpoint)])
  assert "--prompt is required unless --chat is given" in capsys.readouterr().err


def test_several_images_take_upstreams_evaluation_layout(checkpoint, monkeypatch, capsys):
  """As upstream's evaluation: `num_patches` features per image and no image newline."""
  seen = _spy_samples(monkeypatch)
  picture = str(checkpoint / "picture.png")
  cli.main(["--checkpoint", str(checkpoint), "--image", picture, "--image", picture,
            "--prompt", "Are they the same?", *SETTINGS])
  (sample,) = seen
  assert int(sample.image_mask.sum()) == 2 * CONFIG.vision.num_patches and sample.num_crops == 2


def _spy_samples(monkeypatch):
  seen = []
  original = cli.generate

  def spy(model, params, samples, settings, **kw):
    seen.extend(samples)
    return original(model, params, samples, settings, **kw)
  monkeypatch.setattr(cli, "generate", spy)
  return seen


def _reference_video_answer(root, path, question: str, indices) -> str:
  """Upstream's evaluation of a video question, re-stated: the frames at `indices` decoded in order
  (read_video_pyav's loop), one placeholder, the pooled-frame layout, the default settings."""
  import av
  with av.open(str(path)) as container:
    decoded = [f.to_image() for f in container.decode(video=0)]
  tokenizer = Tokenizer.from_dir(root)
  sample = build_sample(build_prompt(tokenizer, question, 1), [video_visual([decoded[i] for i in indices], CONFIG)],
                        CONFIG)
  settings = SamplerSettings(gen_length=8, steps=8, block_length=4, stop_sequences=((CONFIG.tokens.eot,),),
                             vocab_limit=len(tokenizer))
  from lladav_jax import load_pretrained
  _, params = load_pretrained(root)
  answers, _ = generate(LLaDAV(CONFIG, ComputeConfig(scan_layers=True)), {"params": params}, [sample], settings)
  return tokenizer.decode([int(t) for t in answers[0]], skip_special_tokens=True).strip()


def test_video_question_reads_frames_as_upstreams_evaluation(checkpoint, tmp_path, monkeypatch, capsys):
  path = tiny.write_video(tmp_path / "clip.mp4", 9)
  seen = _spy_samples(monkeypatch)
  cli.main(["--checkpoint", str(checkpoint), "--video", str(path), "--max-frames", "4",
            "--prompt", "What color is the circle?", *SETTINGS])
  (sample,) = seen
  # 4 frames of linspace(0, 8, 4) = 0, 2, 5, 8, each pooled to 14 x 14 with a newline per row ("grid")
  assert sample.num_crops == 4 and int(sample.image_mask.sum()) == 4 * 14 * 15
  expected = _reference_video_answer(checkpoint, path, "What color is the circle?", [0, 2, 5, 8])
  assert capsys.readouterr().out.splitlines()[-1] == expected


@pytest.mark.parametrize("frames,placeholders,tokens", [(2, 2, 2 * 2 * 210), (3, 3, 3 * 210)])
def test_video_token_strategy_multiple(checkpoint, tmp_path, monkeypatch, frames, placeholders, tokens):
  """One placeholder per frame: upstream gives two frames the whole video twice; from three frames on it
  fails, and each placeholder gets its own frame here."""
  path = tiny.write_video(tmp_path / "clip.mp4", 5)
  seen = _spy_samples(monkeypatch)
  prompts = []
  original = cli.build_chat_prompt
  monkeypatch.setattr(cli, "build_chat_prompt", lambda tok, messages, **kw: prompts.append(messages[-1].content)
                      or original(tok, messages, **kw))
  cli.main(["--checkpoint", str(checkpoint), "--video", str(path), "--max-frames", str(frames),
            "--token-strategy", "multiple", "--prompt", "Which?", *SETTINGS])
  assert prompts == [" ".join(["<image>"] * placeholders) + "\nWhich?"]
  assert int(seen[0].image_mask.sum()) == tokens


def test_bad_video_inputs_are_one_line_errors(checkpoint, tmp_path, capsys):
  picture = str(checkpoint / "picture.png")
  broken = tmp_path / "broken.mp4"
  broken.write_bytes(b"definitely not a video")
  clip = str(tiny.write_video(tmp_path / "clip.mp4", 3))
  base = ["--checkpoint", str(checkpoint), "--prompt", "hi"]
  for extra, message in ((["--video", "nowhere.mp4"], "video file not found: nowhere.mp4"),
                         (["--video", str(broken)], "broken.mp4"),
                         (["--video", clip, "--image", picture], "--video and --image cannot be combined"),
                         (["--video", clip, "--max-frames", "0"], "--max-frames must be at least 1")):
    with pytest.raises(SystemExit) as error:
      cli.main(base + extra)
    err = capsys.readouterr().err
    assert error.value.code in (1, 2) and message in err and len(err.strip().splitlines()) == 1, err

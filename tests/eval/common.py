"""A tiny random LLaDA-V in the Hugging Face layout (demo tokenizer), and small benchmark files."""

import dataclasses
import io
import json
import pathlib

import flax.linen as nn
import jax
import numpy as np
import safetensors.numpy

from PIL import Image

from lladav_jax.convert import key_map
from lladav_jax.data.prompts import build_prompt
from lladav_jax.demo import tokenizer as demo_tokenizer
from lladav_jax.diffusion.generation import generate
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.images import load_image
from lladav_jax.images.crops import inference_visuals, video_visual
from lladav_jax.images.loading import to_rgb
from lladav_jax.models.lladav import LLaDAV
from lladav_jax.samples import build_sample, collate, model_inputs
from tests import tiny

CONFIG = dataclasses.replace(tiny.LLADAV, text=dataclasses.replace(tiny.TEXT, vocab_size=320),
                             tokens=demo_tokenizer.TOKEN_IDS)
CORPUS = ["What is in the image?", "Answer with the option's letter from the given choices directly.",
          "A. red B. green C. blue D. yellow", "There are several options:", "yes no", "Answer: 12",
          "Give the reason and then write your final answer in the format", "0123456789"]


def sharpened(params, seed: int):
  """Every weight redrawn at scale 0.3 (norm scales around 1): default inits give near-uniform logits and
  the same answer to every prompt; these make answers depend on the prompt and the images."""
  rng = np.random.default_rng(seed)

  def redraw(path, leaf):
    base = 1.0 if "scale" in jax.tree_util.keystr(path) else 0.0
    return (base + 0.3 * rng.standard_normal(leaf.shape)).astype(leaf.dtype)
  return jax.tree_util.tree_map_with_path(redraw, params)


def make_checkpoint(root: pathlib.Path, seed: int = 0, corpus=CORPUS, sharp: bool = False) -> pathlib.Path:
  """config.json + model.safetensors + tokenizer files: what `load_pretrained` and the CLIs read.
  sharp: weights whose answers depend on the prompt (`sharpened`)."""
  root.mkdir(parents=True, exist_ok=True)
  demo_tokenizer.save(root, corpus, vocab_size=300)
  batch = collate([[build_sample([1, 2], [], CONFIG)]], 4, 1, CONFIG)
  params = nn.unbox(LLaDAV(CONFIG, tiny.F32).init(jax.random.key(seed), **model_inputs(batch)))["params"]
  if sharp:
    params = sharpened(jax.device_get(params), seed)
  tensors = dict(key_map.params_to_hf(jax.device_get(params), key_map.lladav_entries(CONFIG, scan=True)))
  safetensors.numpy.save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
                              str(root / "model.safetensors"))
  (root / "config.json").write_text(json.dumps(CONFIG.to_hf_config()))
  return root


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
  buffer = io.BytesIO()
  tiny.random_image(width, height, seed).save(buffer, format="PNG")
  return buffer.getvalue()


def reference_answer(model, params, tokenizer, question, images, gen, steps, block, stops=(), think="no_think"):
  """Upstream's decode of one sample: the lmms-eval wrapper's prompt, stops in its order, the vocabulary
  of the tokenizer, and its clean-up of the text (special tokens skipped, one final "." dropped)."""
  ids = build_prompt(tokenizer, question, len(images), think=think if images else None)
  # Upstream's evaluation layout (tests/unit/test_inference_layout.py re-states its branches).
  sample = build_sample(ids, inference_visuals([to_rgb(b) if isinstance(b, Image.Image) else load_image(b)
                                                for b in images], model.config), model.config)
  return _reference_decode(model, params, tokenizer, sample, gen, steps, block, stops)


def _reference_decode(model, params, tokenizer, sample, gen, steps, block, stops):
  stop_ids = tuple(tuple(tokenizer.encode(s, add_special_tokens=False)) for s in stops) + ((model.config.tokens.eot,),)
  settings = SamplerSettings(gen_length=gen, steps=steps, block_length=block, stop_sequences=stop_ids,
                             stop_order="upstream", vocab_limit=len(tokenizer))
  answers, _ = generate(model, params, [sample], settings)
  text = tokenizer.decode([int(t) for t in answers[0]], skip_special_tokens=True)
  return (text[:-1] if text.endswith(".") else text).strip()


def reference_video_answer(model, params, tokenizer, question, path, indices, gen, steps, block, stops=(),
                           think="no_think", placeholders=1):
  """Upstream's decode of one video question: the frames at `indices` decoded in order with PyAV
  (read_video_pyav's loop), one placeholder (or one per frame, each given the whole video: upstream's
  fallback for at most two frames), the wrapper's prompt, stops and clean-up."""
  import av
  with av.open(str(path)) as container:
    decoded = [f.to_image() for f in container.decode(video=0)]
  clip = video_visual([decoded[i] for i in indices], model.config, pool_mode="bilinear")
  ids = build_prompt(tokenizer, question, placeholders, think=think)
  sample = build_sample(ids, [clip] * placeholders, model.config)
  return _reference_decode(model, params, tokenizer, sample, gen, steps, block, stops)

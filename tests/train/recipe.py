"""What the fine-tuning tests start from: a tiny LLaDA-V checkpoint in upstream's Hugging Face layout,
a small LLaVA-format data set with images, and configs/finetune.py shrunk to the checkpoint's size.

The checkpoint is what upstream's `save_pretrained` leaves (tests/convert/checkpoints.py): bf16 safetensors
shards with an index, upstream's config.json keys (bos_token_id 128000 among them), the vision tower's
own config.json in a local directory, the tokenizer files. Its crops are 28 px (4 patches of 14) so that
a step takes milliseconds.
"""

import json
import pathlib

import flax.linen as nn
import jax
import numpy as np

from lladav_jax import run_config
from lladav_jax.convert import key_map
from lladav_jax.models import ComputeConfig, LLaDAV
from lladav_jax.models.lladav import init_inputs
from tests import tiny
from tests.convert import checkpoints

CROP = 28
# configs/finetune.py at the size of the checkpoint (field -> value; the same for flags and for ConfigDicts).
TINY_MODEL = {
    **{f"model.text.{k}": getattr(tiny.TEXT, k) for k in (
        "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
        "num_key_value_heads")},
    **{f"model.vision.{k}": getattr(tiny.VISION, k) for k in (
        "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")},
    "model.vision.image_size": CROP,
    **{f"model.tokens.{k}": v for k, v in tiny.TOKENS.to_dict().items()},
    "model.max_length": 256,
    "compute.dtype": "float32", "compute.remat_policy": "none",
    "mesh.data": -1, "mesh.fsdp": 1,
}
# Small steps that all have one shape (one compilation): every row fits 256 tokens and 4 crops.
TINY_RUN = {
    "train.global_batch_size": 2, "train.num_steps": 12, "optim.lr": 3e-3, "optim.warmup_ratio": 0.0,
    "checkpoint.every_steps": 4, "checkpoint.async_save": False,
    "data.seq_len_buckets": (256,), "data.crop_buckets": (4,), "data.num_workers": 0, "data.prefetch_batches": 0,
}
# Answers the word-level tokenizer of the checkpoint knows (one token per word): something to learn.
ANSWERS = ["w10 w11 w12 w13", "w20 w21 w22", "w30 w31 w32 w33 w34", "w40 w41"]


def flags(values: dict) -> list[str]:
  """`--config.<field>=<value>` overrides (tuples in the form config_flags parses)."""
  return [f"--config.{field}={value!r}" if isinstance(value, tuple) else f"--config.{field}={value}"
          for field, value in values.items()]


def apply(config, values: dict):
  """The same overrides on a ConfigDict."""
  for field, value in values.items():
    *parents, name = field.split(".")
    holder = config
    for parent in parents:
      holder = holder[parent]
    holder[name] = value
  return config


def write_upstream_checkpoint(directory: pathlib.Path, seed: int = 0) -> pathlib.Path:
  """A random tiny LLaDA-V in upstream's layout (bf16; config.json as upstream writes it)."""
  from configs import finetune
  model_config = run_config.model_config(apply(finetune.get_config(), TINY_MODEL))
  model = LLaDAV(model_config, ComputeConfig(dtype="float32", param_dtype="float32", scan_layers=True))
  dummy = {k: np.zeros(v.shape, v.dtype) for k, v in init_inputs(model_config).items()}
  params = jax.device_get(nn.unbox(model.init(jax.random.key(seed), **dummy))["params"])
  state = {k: np.array(v) for k, v in key_map.params_to_hf(params, key_map.lladav_entries(model_config, scan=True))}
  tower = directory.parent / f"{directory.name}-siglip"
  tower.mkdir(parents=True, exist_ok=True)
  (tower / "config.json").write_text(json.dumps(dict(checkpoints.tiny_siglip_config_json(), image_size=CROP)))
  config_json = {**checkpoints.LLADAV_CONFIG_JSON, "bos_token_id": 128000, "mm_vision_tower": str(tower)}
  checkpoints.write_sharded(directory, checkpoints.bf16(state), config_json, shards=2)
  return directory


def write_llava_data(directory: pathlib.Path, records: int = 8) -> tuple[pathlib.Path, pathlib.Path]:
  """(data.json, image folder): LLaVA records, every other one with a PNG (names relative to the folder)."""
  images = directory / "images"
  images.mkdir(parents=True, exist_ok=True)
  data = []
  for i in range(records):
    question = f"w1 w{50 + i}"  # each question has one answer: a loss that can go to 0
    record = {"id": f"r{i}", "conversations": [{"from": "human", "value": question},
                                               {"from": "gpt", "value": ANSWERS[i % len(ANSWERS)]}]}
    if i % 2 == 0:
      name = f"picture{i}.png"
      tiny.random_image(2 * CROP, CROP, seed=i).save(images / name)
      record["image"] = name
      record["conversations"][0]["value"] = "<image>\n" + question
    data.append(record)
  path = directory / "data.json"
  path.write_text(json.dumps(data))
  return path, images


def finetune_command(config_file: str, workdir, init_from, data, image_folder, **overrides) -> list[str]:
  """The recipe's command line (docs/training.md), at the test's size."""
  return ["--config", config_file, "--workdir", str(workdir),
          f"--config.checkpoint.init_from={init_from}", f"--config.train.tokenizer_dir={init_from}",
          f"--config.data.sources[0].path={data}", f"--config.data.sources[0].image_folder={image_folder}",
          *flags(TINY_MODEL), *flags({**TINY_RUN, **overrides})]

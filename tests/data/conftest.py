"""Fixtures of the data tests: the tiny LLaDA-layout tokenizer, a config with LLaDA's vocabulary size."""

import dataclasses
import json
import os

import pytest

from lladav_jax.data import Tokenizer
from lladav_jax.tokens import TokenIds
from tests import tiny
from tests.data.tiny_tokenizer import save_tokenizer_dir

# Real crop geometry and LLaDA's vocabulary (the special ids are above 126000); tiny widths.
CONFIG = dataclasses.replace(tiny.LLADAV, text=dataclasses.replace(tiny.TEXT, vocab_size=126464), max_length=4096,
                             tokens=TokenIds())  # the LLaDA-8B ids of the tiny tokenizer


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
  return save_tokenizer_dir(str(tmp_path_factory.mktemp("tokenizer")))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir) -> Tokenizer:
  return Tokenizer.from_dir(tokenizer_dir)


@pytest.fixture(scope="session")
def hf_tokenizer(tokenizer_dir):
  """transformers' own loading of the same directory: the reference for encoding and templates."""
  from transformers import PreTrainedTokenizerFast
  return PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)


def write_json(path, records, jsonl: bool = False) -> str:
  with open(path, "w", encoding="utf-8") as f:
    if jsonl:
      f.writelines(json.dumps(r) + "\n" for r in records)
    else:
      json.dump(records, f, indent=1)
  return os.fspath(path)


def conversation(question: str, answer: str, record_id: str | None = None, image=None, **extra) -> dict:
  record = {"conversations": [{"from": "human", "value": question}, {"from": "gpt", "value": answer}], **extra}
  if record_id is not None:
    record["id"] = record_id
  if image is not None:
    record["image"] = image
  return record

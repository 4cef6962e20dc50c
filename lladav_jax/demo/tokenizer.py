"""A small byte-level BPE tokenizer for the demo task, saved as a Hugging Face tokenizer directory.

It carries the LLaDA special tokens the chat template and the model need, at fixed small ids, so the
demo goes through exactly the loading and templating code a real LLaDA checkpoint's tokenizer does
(`lladav_jax.data.tokenizer.Tokenizer.from_dir`). Its vocabulary is learned from the task's text.
"""

import json
import os
from typing import Iterable

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from lladav_jax.tokens import TokenIds

# Special tokens first, so the BPE trainer gives them ids 0..5.
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>", "<|mdm_mask|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>")
TOKEN_IDS = TokenIds(bos=0, eos=1, mask=2, start_header=3, end_header=4, eot=5)
# What the chat template writes around the task's text (roles, the header's blank line).
TEMPLATE_TEXT = ("system", "user", "assistant", "\n\n", "\n")


def build(corpus: Iterable[str], vocab_size: int) -> tokenizers.Tokenizer:
  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  backend.train_from_iterator(list(corpus) + list(TEMPLATE_TEXT), trainer=trainer)
  for token_id, token in enumerate(SPECIAL_TOKENS):
    assert backend.token_to_id(token) == token_id, (token, backend.token_to_id(token))
  return backend


def save(path: str | os.PathLike, corpus: Iterable[str], vocab_size: int = 512) -> str:
  """Trains on `corpus` and writes tokenizer.json, tokenizer_config.json, special_tokens_map.json.

  Mirrors the LLaDA checkpoint's files: no BOS added by encoding, pad = EOS, no unk token.
  """
  path = os.fspath(path)
  os.makedirs(path, exist_ok=True)
  backend = build(corpus, vocab_size)
  backend.save(os.path.join(path, "tokenizer.json"))
  entry = dict(lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
  config = {
      "add_bos_token": False, "add_eos_token": False,
      "added_tokens_decoder": {str(i): dict(content=t, **entry) for i, t in enumerate(SPECIAL_TOKENS)},
      "bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1], "pad_token": SPECIAL_TOKENS[1],
      "clean_up_tokenization_spaces": False, "model_max_length": 4096,
      "tokenizer_class": "PreTrainedTokenizerFast",
  }
  with open(os.path.join(path, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=1)
  with open(os.path.join(path, "special_tokens_map.json"), "w") as f:
    json.dump({"bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1], "pad_token": SPECIAL_TOKENS[1]}, f)
  return path

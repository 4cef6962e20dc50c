"""A small byte-level BPE tokenizer for the demo task, saved as a Hugging Face tokenizer directory.

It carries the LLaDA special tokens the chat template and the model need, at fixed small ids, so the
demo goes through exactly the loading and templating code a real LLaDA checkpoint's tokenizer does
(`lladav_jax.data.tokenizer.Tokenizer.from_dir`). Its vocabulary is learned from the task's text.
"""

import json
import os
import shutil
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
# LLaMA-3's pre-tokenizer split (as in its tokenizer.json): newline runs stay one piece whatever
# follows, so the "\n\n" that ends a prompt's assistant header is the token training saw there.
SPLIT_PATTERN = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
                 r"|\s*[\r\n]+|\s+(?!\S)|\s+")


def build(corpus: Iterable[str], vocab_size: int) -> tokenizers.Tokenizer:
  backend = tokenizers.Tokenizer(models.BPE())
  backend.pre_tokenizer = pre_tokenizers.Sequence([
      pre_tokenizers.Split(tokenizers.Regex(SPLIT_PATTERN), behavior="isolated", invert=False),
      pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
  backend.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
  backend.train_from_iterator(list(corpus) + list(TEMPLATE_TEXT), trainer=trainer)
  for token_id, token in enumerate(SPECIAL_TOKENS):
    if backend.token_to_id(token) != token_id:
      raise RuntimeError(f"BPE trainer gave {token} id {backend.token_to_id(token)}, expected {token_id}")
  return backend


def save(path: str | os.PathLike, corpus: Iterable[str], vocab_size: int = 512) -> str:
  """Trains on `corpus` and writes tokenizer.json, tokenizer_config.json, special_tokens_map.json.

  Mirrors the LLaDA checkpoint's files: no BOS added by encoding, pad = EOS, no unk token.
  """
  path = os.fspath(path)
  staging = path + ".partial"  # renamed into place at the end: an interrupted save leaves no tokenizer
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  backend = build(corpus, vocab_size)
  backend.save(os.path.join(staging, "tokenizer.json"))
  entry = dict(lstrip=False, normalized=False, rstrip=False, single_word=False, special=True)
  config = {
      "add_bos_token": False, "add_eos_token": False,
      "added_tokens_decoder": {str(i): dict(content=t, **entry) for i, t in enumerate(SPECIAL_TOKENS)},
      "bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1], "pad_token": SPECIAL_TOKENS[1],
      "clean_up_tokenization_spaces": False, "model_max_length": 4096,
      "tokenizer_class": "PreTrainedTokenizerFast",
  }
  with open(os.path.join(staging, "tokenizer_config.json"), "w") as f:
    json.dump(config, f, indent=1)
  with open(os.path.join(staging, "special_tokens_map.json"), "w") as f:
    json.dump({"bos_token": SPECIAL_TOKENS[0], "eos_token": SPECIAL_TOKENS[1], "pad_token": SPECIAL_TOKENS[1]}, f)
  shutil.rmtree(path, ignore_errors=True)
  os.replace(staging, path)
  return path

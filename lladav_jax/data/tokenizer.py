"""The checkpoint's Hugging Face tokenizer, loaded with the `tokenizers` library (no transformers, no torch).

A Hugging Face tokenizer directory holds `tokenizer.json` (vocabulary, merges, pre-tokenizer, added
tokens, post-processor) and `tokenizer_config.json` / `special_tokens_map.json` (which strings are
BOS, EOS, pad, unk). LLaDA's is a `PreTrainedTokenizerFast`, so transformers adds nothing of its own
when it encodes: `tokenizer(text)` is the backend's `encode(text, add_special_tokens=True)` (the
post-processor decides whether anything is added) and `apply_chat_template(..., tokenize=True)`
encodes with `add_special_tokens=False`. This class reproduces exactly that.
"""

import json
import os
from typing import Any, Sequence

import tokenizers

from lladav_jax.tokens import TokenIds

# The literal strings of the llava_llada chat template (upstream writes them into its template).
BOS_TEXT = "<|startoftext|>"
START_HEADER_TEXT = "<|start_header_id|>"
END_HEADER_TEXT = "<|end_header_id|>"
EOT_TEXT = "<|eot_id|>"
IMAGE_TEXT = "<image>"
MASK_TEXT = "<|mdm_mask|>"  # LLaDA's [MASK]
_SPECIAL_KEYS = ("bos_token", "eos_token", "pad_token", "unk_token")


class TokenizerError(ValueError):
  """A tokenizer directory that cannot be used; the message names the file and the key."""


def _token_content(value: Any) -> str | None:
  """A special-token entry is a string or an AddedToken dict with a `content` key."""
  if value is None or isinstance(value, str):
    return value
  if isinstance(value, dict) and isinstance(value.get("content"), str):
    return value["content"]
  raise TokenizerError(f"cannot read special token entry {value!r}")


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
  except json.JSONDecodeError as e:
    raise TokenizerError(f"{path}: not valid JSON ({e})") from e
  if not isinstance(data, dict):
    raise TokenizerError(f"{path}: expected a JSON object")
  return data


class Tokenizer:
  """Text <-> ids with the special-token rules of the checkpoint's tokenizer files.

  Attributes: bos_id, eos_id, pad_id, unk_id (None when the tokenizer has none).
  """

  def __init__(self, backend: tokenizers.Tokenizer, special_tokens: dict[str, str | None], name: str = "<tokenizer>"):
    self._backend = backend
    self.name = name
    self.special_tokens = dict(special_tokens)
    ids = {}
    for key in _SPECIAL_KEYS:
      text = special_tokens.get(key)
      ids[key] = None if text is None else backend.token_to_id(text)
      if text is not None and ids[key] is None:
        raise TokenizerError(f"{name}: {key} {text!r} is not in the vocabulary")
    self.bos_id, self.eos_id, self.unk_id = ids["bos_token"], ids["eos_token"], ids["unk_token"]
    # Upstream's train.py: `if tokenizer.unk_token is not None: tokenizer.pad_token = tokenizer.unk_token`.
    self.pad_id = self.unk_id if self.unk_id is not None else ids["pad_token"]

  @classmethod
  def from_dir(cls, path: str | os.PathLike) -> "Tokenizer":
    """Loads `tokenizer.json` plus the special-token names of `tokenizer_config.json` and
    `special_tokens_map.json` (the latter wins where both name a token, as in transformers)."""
    path = os.fspath(path)
    tokenizer_file = os.path.join(path, "tokenizer.json")
    if not os.path.isfile(tokenizer_file):
      raise TokenizerError(f"{path}: no tokenizer.json (a Hugging Face fast tokenizer directory is needed)")
    try:
      backend = tokenizers.Tokenizer.from_file(tokenizer_file)
    except Exception as e:  # the Rust library raises plain Exceptions
      raise TokenizerError(f"{tokenizer_file}: cannot load ({e})") from e
    special: dict[str, str | None] = {key: None for key in _SPECIAL_KEYS}
    config_file = os.path.join(path, "tokenizer_config.json")
    config = _read_json(config_file) if os.path.isfile(config_file) else {}
    for key in _SPECIAL_KEYS:
      special[key] = _token_content(config.get(key))
    map_file = os.path.join(path, "special_tokens_map.json")
    if os.path.isfile(map_file):
      for key, value in _read_json(map_file).items():
        if key in special:
          special[key] = _token_content(value)
    # Tokens the config declares must be in tokenizer.json at the same ids, or ids would silently shift.
    for token_id, entry in (config.get("added_tokens_decoder") or {}).items():
      content = _token_content(entry)
      found = backend.token_to_id(content)
      if found != int(token_id):
        raise TokenizerError(f"{config_file}: added token {content!r} has id {token_id} but tokenizer.json "
                             f"gives {found}")
    return cls(backend, special, name=path)

  def __len__(self) -> int:
    """Number of entries including added tokens (126349 for LLaDA; the model has 126464 rows)."""
    return self._backend.get_vocab_size(with_added_tokens=True)

  def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
    """`add_special_tokens=True` is transformers' `tokenizer(text)`, False its chat-template encoding."""
    return self._backend.encode(text, add_special_tokens=add_special_tokens).ids

  def decode(self, ids: Sequence[int], skip_special_tokens: bool = False) -> str:
    return self._backend.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

  def token_to_id(self, token: str) -> int | None:
    """transformers' `convert_tokens_to_ids` for one token: the vocabulary entry, else the unk id."""
    found = self._backend.token_to_id(token)
    return self.unk_id if found is None else found

  def with_added_special_token(self, token: str) -> tuple["Tokenizer", int]:
    """A copy with `token` added as a special token (upstream adds `<image>` this way while it builds
    training sequences, so the text around it is encoded in separate pieces); returns (copy, its id)."""
    backend = tokenizers.Tokenizer.from_str(self._backend.to_str())
    backend.add_special_tokens([tokenizers.AddedToken(token, special=True, normalized=False)])
    return Tokenizer(backend, self.special_tokens, name=self.name), backend.token_to_id(token)

  def check_token_ids(self, expected: TokenIds) -> None:
    """Raises if the chat-template tokens do not have the ids the model config expects."""
    found = {"bos": self._backend.token_to_id(BOS_TEXT), "eos": self.eos_id,
             "start_header": self._backend.token_to_id(START_HEADER_TEXT),
             "end_header": self._backend.token_to_id(END_HEADER_TEXT), "eot": self._backend.token_to_id(EOT_TEXT)}
    mask = self._backend.token_to_id(MASK_TEXT)
    if mask is not None:  # the diffusion mask token, when the tokenizer names it
      found["mask"] = mask
    for key, value in found.items():
      if value != getattr(expected, key):
        raise TokenizerError(f"{self.name}: the {key} token has id {value}, the model config expects "
                             f"{getattr(expected, key)}")

  def __getstate__(self):
    return {"json": self._backend.to_str(), "special_tokens": self.special_tokens, "name": self.name}

  def __setstate__(self, state):
    self.__init__(tokenizers.Tokenizer.from_str(state["json"]), state["special_tokens"], state["name"])

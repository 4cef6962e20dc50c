"""Special token ids of the LLaDA-8B tokenizer and the in-sequence image placeholder."""

import dataclasses
import json
import os
from typing import Any, Mapping

# Placeholder id that marks where image features go inside `input_ids` (never embedded).
IMAGE_PLACEHOLDER_ID = -200
# Label value of positions that are not supervised (prompt, image features).
IGNORE_LABEL = -100


@dataclasses.dataclass(frozen=True)
class TokenIds:
  """Ids the model code needs to know about; defaults are those of LLaDA-8B."""

  bos: int = 126080  # <|startoftext|>
  eos: int = 126081  # <|endoftext|>
  mask: int = 126336  # [MASK]
  start_header: int = 126346  # <|start_header_id|>
  end_header: int = 126347  # <|end_header_id|>
  eot: int = 126348  # <|eot_id|>

  HF_KEY = "lladav_token_ids"  # our own key in config.json; upstream ignores unknown keys
  # How the LLaDA tokenizer spells each token (tokenizer.json "added_tokens").
  TEXTS = {"bos": "<|startoftext|>", "eos": "<|endoftext|>", "mask": "<|mdm_mask|>",
           "start_header": "<|start_header_id|>", "end_header": "<|end_header_id|>", "eot": "<|eot_id|>"}

  def to_dict(self) -> dict[str, int]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any] | None) -> "TokenIds":
    if d is None:
      return cls()
    unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
      raise ValueError(f"{cls.HF_KEY}: unknown token names {sorted(unknown)}")
    return cls(**{k: int(v) for k, v in d.items()})

  @classmethod
  def from_config_json(cls, d: Mapping[str, Any]) -> "TokenIds":
    """Our `lladav_token_ids` entry if the config.json has one, else the LLaDA-8B ids (with the
    config's own `mask_token_id` when it names one, as the original LLaDA config does)."""
    if d.get(cls.HF_KEY) is not None:
      return cls.from_dict(d[cls.HF_KEY])
    return cls(mask=int(d["mask_token_id"])) if d.get("mask_token_id") is not None else cls()

  @classmethod
  def from_tokenizer_json(cls, path: str | os.PathLike) -> "TokenIds":
    """The ids a Hugging Face `tokenizer.json` gives the tokens of `TEXTS`."""
    with open(path, encoding="utf-8") as f:
      data = json.load(f)
    found = {t["content"]: int(t["id"]) for t in data.get("added_tokens", [])}
    vocab = (data.get("model") or {}).get("vocab")
    if isinstance(vocab, dict):
      found = {**{k: int(v) for k, v in vocab.items()}, **found}
    missing = [text for text in cls.TEXTS.values() if text not in found]
    if missing:
      raise ValueError(f"{os.fspath(path)}: no token {', '.join(map(repr, missing))}")
    return cls(**{name: found[text] for name, text in cls.TEXTS.items()})

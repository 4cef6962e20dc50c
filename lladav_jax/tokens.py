"""Special token ids of the LLaDA-8B tokenizer and the in-sequence image placeholder."""

import dataclasses
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

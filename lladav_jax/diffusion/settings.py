"""What the masked-diffusion sampler does, as one frozen (hashable) dataclass.

Every field is static: together with the batch shape it keys the compiled decode program. `resolve`
fills the defaults that depend on the model (special ids) and checks every combination once, with an
error that names the field. `decoding_settings` is the one rule that turns stop strings into stop
sequences, for every entry point.
"""

import dataclasses
from typing import Sequence

from lladav_jax.model_config import LLaDAVConfig

REMASKING = ("low_confidence", "random")
CACHE_MODES = ("none", "prefix", "dual", "dllm")
# dLLM-Cache's settings in upstream LLaDA-V's demo: gen interval 7, prompt interval 25, transfer ratio 0.25.
DLLM_DEFAULTS = {"refresh": 7, "prompt_refresh": 25, "transfer_ratio": 0.25}
STOP_ORDERS = ("earliest", "upstream")


class SettingsError(ValueError):
  """Decoding settings that cannot work; the message names the field."""


@dataclasses.dataclass(frozen=True)
class SamplerSettings:
  """Decoding settings (defaults: upstream `generate_with_embeds`, plus the `<|eot_id|>` stop).

  gen_length       masked positions appended after the prompt
  steps            model evaluations over the whole answer (split evenly over the blocks)
  block_length     semi-autoregressive block size (gen_length = a single block)
  temperature      0 = argmax; > 0 = Gumbel-max sampling of softmax(logits / temperature)
  cfg_scale        classifier-free guidance: un + (s + 1) (cond - un), un = prompt masked out
  remasking        "low_confidence" (commit the most probable predictions) or "random"
  cache            "none" (exact), "prefix" (prompt keys/values reused) or "dual" (every position but
                   the current block reused), refreshed at every block start and every `refresh` steps;
                   or "dllm" (dLLM-Cache: every layer's features reused, the generated part refreshed
                   every `refresh` and the prompt every `prompt_refresh` model evaluations of the answer)
  refresh          refresh interval r in steps within a block (None = only at block starts); with "dllm"
                   the generated part's interval in model evaluations (None = 7, upstream's demo)
  prompt_refresh   "dllm" only: the prompt's refresh interval in model evaluations (None = 25)
  transfer_ratio   "dllm" only: share of the generated positions recomputed at the other evaluations,
                   those whose value projections moved most (None = 0.25)
  threshold        Fast-dLLM: commit every prediction with probability >= threshold (at least one)
  factor           Fast-dLLM: commit the n most confident while the n-th has p >= 1 - factor / (n + 1)
  stop_sequences   token-id sequences; None = ((<|eot_id|>,),); () = none
  stop_order       "earliest" occurrence of any stop, or "upstream"'s list-order rule (see docs)
  suffix           token ids placed after the answer, never masked (upstream's generation_suffix)
  suppressed_ids   ids forbidden at masked positions; None = EOS, BOS and the two header ids
  vocab_limit      ids >= this are never produced (the tokenizer's length); None = the whole head
  """

  gen_length: int = 128
  steps: int = 128
  block_length: int = 128
  temperature: float = 0.0
  cfg_scale: float = 0.0
  remasking: str = "low_confidence"
  cache: str = "none"
  refresh: int | None = None
  prompt_refresh: int | None = None
  transfer_ratio: float | None = None
  threshold: float | None = None
  factor: float | None = None
  stop_sequences: tuple[tuple[int, ...], ...] | None = None
  stop_order: str = "earliest"
  suffix: tuple[int, ...] = ()
  suppressed_ids: tuple[int, ...] | None = None
  vocab_limit: int | None = None

  @property
  def num_blocks(self) -> int:
    return self.gen_length // self.block_length

  @property
  def steps_per_block(self) -> int:
    return self.steps // self.num_blocks

  @property
  def parallel(self) -> bool:
    """Threshold/factor decoding: the number committed per step follows the confidences."""
    return self.threshold is not None or self.factor is not None

  @property
  def max_steps_per_block(self) -> int:
    # Parallel decoding commits at least one token per step, so a block takes at most its length.
    return self.block_length if self.parallel else self.steps_per_block

  def resolve(self, config: LLaDAVConfig) -> "SamplerSettings":
    """Fills the model-dependent defaults and validates; returns the settings the program uses."""
    vocab = config.text.vocab_size
    tokens = config.tokens
    limit = vocab if self.vocab_limit is None else int(self.vocab_limit)
    stops = ((tokens.eot,),) if self.stop_sequences is None else self.stop_sequences
    suppressed = ((tokens.eos, tokens.bos, tokens.start_header, tokens.end_header)
                  if self.suppressed_ids is None else self.suppressed_ids)
    dllm = {name: getattr(self, name) if getattr(self, name) is not None else default
            for name, default in DLLM_DEFAULTS.items()} if self.cache == "dllm" else {}
    out = dataclasses.replace(
        self,
        **dllm,
        vocab_limit=limit,
        stop_sequences=tuple(tuple(int(t) for t in s) for s in stops),
        # Ids at or above the limit can never be produced anyway.
        suppressed_ids=tuple(sorted({int(t) for t in suppressed if 0 <= int(t) < limit})),
        suffix=tuple(int(t) for t in self.suffix),
        temperature=float(self.temperature),
        cfg_scale=float(self.cfg_scale),
    )
    out._validate(config)
    return out

  def _validate(self, config: LLaDAVConfig) -> None:
    def fail(message):
      raise SettingsError(f"sampler settings: {message}")

    for name in ("gen_length", "steps", "block_length"):
      if int(getattr(self, name)) < 1:
        fail(f"{name} must be >= 1, got {getattr(self, name)}")
    if self.gen_length % self.block_length:
      fail(f"gen_length {self.gen_length} is not divisible by block_length {self.block_length}")
    if self.steps % self.num_blocks:
      fail(f"steps {self.steps} is not divisible by the number of blocks {self.num_blocks} "
           f"(gen_length {self.gen_length} / block_length {self.block_length})")
    if self.temperature < 0:
      fail(f"temperature must be >= 0, got {self.temperature}")
    if self.cfg_scale < 0:
      fail(f"cfg_scale must be >= 0, got {self.cfg_scale}")
    if self.remasking not in REMASKING:
      fail(f"remasking {self.remasking!r}; choices: {REMASKING}")
    if self.cache not in CACHE_MODES:
      fail(f"cache {self.cache!r}; choices: {CACHE_MODES}")
    if self.refresh is not None and int(self.refresh) < 1:
      fail(f"refresh must be >= 1 (or None for block starts only), got {self.refresh}")
    if self.cache != "dllm":
      for name in ("prompt_refresh", "transfer_ratio"):
        if getattr(self, name) is not None:
          fail(f"{name} is a setting of cache 'dllm', not of cache {self.cache!r}")
    else:
      if int(self.prompt_refresh) < 1:
        fail(f"prompt_refresh must be >= 1, got {self.prompt_refresh}")
      if not 0.0 <= self.transfer_ratio <= 1.0:
        fail(f"transfer_ratio must be in [0, 1], got {self.transfer_ratio}")
    if self.threshold is not None and self.factor is not None:
      fail("threshold and factor are alternatives; set one")
    if self.threshold is not None and not 0.0 < self.threshold <= 1.0:
      fail(f"threshold must be in (0, 1], got {self.threshold}")
    if self.factor is not None and not self.factor > 0:
      fail(f"factor must be > 0, got {self.factor}")
    if self.stop_order not in STOP_ORDERS:
      fail(f"stop_order {self.stop_order!r}; choices: {STOP_ORDERS}")
    vocab = config.text.vocab_size
    if not 0 < self.vocab_limit <= vocab:
      fail(f"vocab_limit {self.vocab_limit} is outside (0, {vocab}] (the model's vocabulary)")
    for i, stop in enumerate(self.stop_sequences):
      if not stop:
        fail(f"stop sequence {i} is empty")
      if any(not 0 <= t < vocab for t in stop):
        fail(f"stop sequence {i} {stop} has ids outside the vocabulary {vocab}")
      if len(stop) > self.gen_length:
        fail(f"stop sequence {i} {stop} is longer than gen_length {self.gen_length}")
    if any(not 0 <= t < vocab for t in self.suffix):
      fail(f"suffix {self.suffix} has ids outside the vocabulary {vocab}")


def decoding_settings(tokenizer, eot_id: int, *, gen_length: int, steps: int, block_length: int,
                      stops: Sequence[str] = (), stop_order: str = "upstream", **fields) -> SamplerSettings:
  """Settings as LLaDA-V's evaluation decodes: the stop strings' ids in order, then `<|eot_id|>` (upstream
  appends the conversation separator to the task's stopping criteria), scanned in upstream's order, and
  only the ids the tokenizer has (`vocab_limit`). `tokenizer`: anything with `encode(text,
  add_special_tokens)` and `len()`; `fields`: any other SamplerSettings field."""
  sequences = []
  for text in stops:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if not ids:
      raise ValueError(f"stop string {text!r} encodes to no tokens")
    sequences.append(tuple(ids))
  sequences.append((eot_id,))
  return SamplerSettings(gen_length=gen_length, steps=steps, block_length=block_length,
                         stop_sequences=tuple(sequences), stop_order=stop_order, vocab_limit=len(tokenizer),
                         **fields)

"""Training metrics: FLOPs per step (for MFU), TensorBoard + JSONL writers, the loss-curve plot.

FLOPs are those of the step as shaped: every row position through the language tower with full
bidirectional attention (LLaDA has no causal mask, so nothing is halved), every crop slot through
the vision tower, matmuls only, remat recomputation not counted. The backward pass costs 2x the
forward for a tower with trainable weights, 1x for a frozen tower that gradients must cross (to reach
a trainable one before it), and nothing for a frozen tower with nothing trainable before it.
"""

import json
import os
from typing import Iterable, Sequence

import jax

from lladav_jax.atomic_files import write_atomic
from lladav_jax.model_config import LLaDAVConfig

# Dense bf16 peak FLOP/s per chip, by substring of jax's device_kind.
PEAK_FLOPS = (
    ("TPU v6", 918e12),
    ("TPU v5 lite", 197e12), ("TPU v5e", 197e12),
    ("TPU v5", 459e12),  # v5p
    ("TPU v4", 275e12),
    ("H200", 989e12), ("H100", 989e12),
    ("A100", 312e12),
)


def peak_flops_per_device(device: jax.Device, configured: float = 0.0) -> float | None:
  if configured > 0:
    return configured
  for key, value in PEAK_FLOPS:
    if key in device.device_kind:
      return value
  return None


def tower_forward_flops(config: LLaDAVConfig, batch: int, seq_len: int, crops: int) -> dict[str, float]:
  """Forward matmul FLOPs of each tower for a batch [B, L] with C crop slots per row."""
  text, vision = config.text, config.vision
  d, f, hd = text.hidden_size, text.intermediate_size, text.head_dim
  qkvo = d * hd * (text.num_attention_heads * 2 + text.num_key_value_heads * 2)
  per_token = text.num_hidden_layers * (qkvo + 3 * d * f) + d * text.vocab_size
  tokens = batch * seq_len
  language = 2 * tokens * per_token + text.num_hidden_layers * 4 * batch * seq_len * seq_len * d

  dv, fv, t = vision.hidden_size, vision.intermediate_size, vision.num_patches
  layers = config.vision_feature_depth
  patch = 3 * vision.patch_size ** 2 * dv
  crop_tokens = batch * crops * t
  vision_flops = (2 * crop_tokens * (patch + layers * (4 * dv * dv + 2 * dv * fv))
                  + layers * 4 * batch * crops * t * t * dv)
  depth = config.projector.depth
  projector = 2 * crop_tokens * (dv * d + (depth - 1) * d * d)
  return dict(vision=float(vision_flops), projector=float(projector), language=float(language))


def step_flops(config: LLaDAVConfig, batch: int, seq_len: int, crops: int, trainable: Sequence[str]) -> float:
  """Forward + backward FLOPs of one optimiser step (all micro-batches)."""
  forward = tower_forward_flops(config, batch, seq_len, crops)
  total, upstream_trainable = 0.0, False
  for tower in ("vision", "projector", "language"):  # in data-flow order
    trains = tower in trainable
    backward = 2.0 if trains else (1.0 if upstream_trainable else 0.0)
    total += forward[tower] * (1.0 + backward)
    upstream_trainable = upstream_trainable or trains
  return total


class MetricWriter:
  """Scalars to TensorBoard event files and to `metrics.jsonl` (process 0 only).

  A run resumed at `start_step` logs the steps after it again: what an interrupted run logged past
  that step (and a line it was killed while writing) is dropped from metrics.jsonl first, and hidden
  from TensorBoard (its purge step), so each step is there once.
  """

  def __init__(self, workdir: str, *, enabled: bool, start_step: int = 0):
    self.enabled = enabled
    self.jsonl = os.path.join(workdir, "metrics.jsonl")
    self.tensorboard = None
    if enabled:
      drop_steps_after(self.jsonl, start_step)
      from tensorboardX import SummaryWriter
      self.tensorboard = SummaryWriter(os.path.join(workdir, "tensorboard"), purge_step=start_step + 1)

  def write(self, step: int, scalars: dict[str, float]):
    if not self.enabled:
      return
    for name, value in scalars.items():
      self.tensorboard.add_scalar(f"train/{name}", value, step)
    with open(self.jsonl, "a") as f:
      f.write(json.dumps(dict(step=step, **scalars)) + "\n")

  def flush(self):
    if self.tensorboard is not None:
      self.tensorboard.flush()

  def close(self):
    if self.tensorboard is not None:
      self.tensorboard.close()


def drop_steps_after(path: str, step: int) -> None:
  """Rewrites metrics.jsonl (whole, atomically) without the records of steps after `step` and without
  lines that are not complete JSON records; nothing happens when there are none."""
  if not os.path.exists(path):
    return
  with open(path, encoding="utf-8") as f:
    lines = f.readlines()
  keep = []
  for line in lines:
    try:
      record = json.loads(line)
    except json.JSONDecodeError:
      continue
    if line.endswith("\n") and int(record["step"]) <= step:
      keep.append(line)
  if len(keep) != len(lines):
    write_atomic(path, "".join(keep))


def read_metrics(path: str) -> dict[int, dict]:
  """metrics.jsonl -> {step: scalars}; a step logged twice (re-run after a restart) keeps the last."""
  out = {}
  if not os.path.exists(path):
    return out
  with open(path) as f:
    for line in f:
      if line.strip():
        record = json.loads(line)
        out[int(record["step"])] = record
  return out


def plot_loss(records: Iterable[dict], path: str) -> None:
  """PNG of the loss curve, written atomically."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  records = sorted(records, key=lambda r: r["step"])
  fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
  ax.plot([r["step"] for r in records], [r["loss"] for r in records], linewidth=1.0)
  ax.set_xlabel("step")
  ax.set_ylabel("masked-diffusion loss")
  ax.grid(alpha=0.3)
  fig.tight_layout()
  write_atomic(path, lambda f: fig.savefig(f, format="png"))
  plt.close(fig)

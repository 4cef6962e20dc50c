"""Tiny configs and random reference models shared by the tests (one place, CPU-sized)."""

import numpy as np
from PIL import Image

from lladav_jax.model_config import LLaDAConfig, LLaDAVConfig, ProjectorConfig, SiglipConfig
from lladav_jax.models.compute import ComputeConfig
from lladav_jax.tokens import TokenIds

TEXT = LLaDAConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                   num_attention_heads=4, num_key_value_heads=4, rope_theta=500000.0, rms_norm_eps=1e-5)
# Crops stay 384 px / patch 14 (729 tokens per crop), as upstream hard-codes; only widths shrink.
VISION = SiglipConfig(hidden_size=16, intermediate_size=24, num_hidden_layers=3, num_attention_heads=2,
                      image_size=384, patch_size=14, layer_norm_eps=1e-6)
PROJECTOR = ProjectorConfig("mlp2x_gelu", in_features=VISION.hidden_size, out_features=TEXT.hidden_size)
# Special ids inside the small vocabulary (the LLaDA-8B ids would not fit).
TOKENS = TokenIds(bos=90, eos=91, mask=95, start_header=92, end_header=93, eot=94)
LLADAV = LLaDAVConfig(text=TEXT, vision=VISION, projector=PROJECTOR, max_length=4096, tokens=TOKENS)

F32 = ComputeConfig(dtype="float32", param_dtype="float32", scan_layers=True)
F32_LOOP = ComputeConfig(dtype="float32", param_dtype="float32", scan_layers=False)


def random_image(width: int, height: int, seed: int = 0) -> Image.Image:
  """A smooth random RGB image (smooth, so resampling differences are not hidden by noise)."""
  rng = np.random.default_rng(seed)
  small = rng.integers(0, 256, size=(max(2, height // 16), max(2, width // 16), 3), dtype=np.uint8)
  return Image.fromarray(small).resize((width, height), Image.Resampling.BILINEAR)


def write_video(path, num_frames: int, fps: int = 10, size: tuple[int, int] = (64, 48)):
  """An MPEG-4 file of `num_frames` frames (PyAV); frame i is grey at level `video_level(i, num_frames)`
  with a left-to-right ramp, so frames are told apart after compression."""
  import av
  width, height = size
  ramp = np.linspace(0, 8, width)[None, :, None]
  with av.open(str(path), "w") as container:
    stream = container.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
    for i in range(num_frames):
      pixels = np.broadcast_to(video_level(i, num_frames) + ramp, (height, width, 3))
      frame = av.VideoFrame.from_ndarray(np.clip(pixels, 0, 255).astype(np.uint8), format="rgb24")
      for packet in stream.encode(frame):
        container.mux(packet)
    for packet in stream.encode():
      container.mux(packet)
  return path


def video_level(i: int, num_frames: int) -> int:
  """The grey level of frame i of `write_video` (levels 10 or more apart while num_frames <= 24)."""
  return 10 + (i * 230) // max(1, num_frames - 1)


def hf_llama(config: LLaDAConfig, seed: int = 0):
  """transformers' Llama with the same dims (the causal mask is lifted by the caller's 4D mask)."""
  import torch
  from transformers import LlamaConfig, LlamaForCausalLM
  torch.manual_seed(seed)
  hf_config = LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.hidden_size,
      intermediate_size=config.intermediate_size, num_hidden_layers=config.num_hidden_layers,
      num_attention_heads=config.num_attention_heads, num_key_value_heads=config.num_key_value_heads,
      rope_theta=config.rope_theta, rms_norm_eps=config.rms_norm_eps, tie_word_embeddings=False,
      attention_bias=False, mlp_bias=False, hidden_act="silu",
      max_position_embeddings=config.max_position_embeddings)
  return randomize(LlamaForCausalLM(hf_config).eval())


def hf_siglip(config: SiglipConfig, seed: int = 0):
  import torch
  from transformers import SiglipVisionConfig, SiglipVisionModel
  torch.manual_seed(seed)
  hf_config = SiglipVisionConfig(
      hidden_size=config.hidden_size, intermediate_size=config.intermediate_size,
      num_hidden_layers=config.num_hidden_layers, num_attention_heads=config.num_attention_heads,
      image_size=config.image_size, patch_size=config.patch_size, layer_norm_eps=config.layer_norm_eps,
      hidden_act="gelu_pytorch_tanh")
  return randomize(SiglipVisionModel(hf_config).eval())


def randomize(model, scale: float = 0.1):
  """Default inits leave norms at 1 and biases at 0; randomise every tensor so each one matters."""
  import torch
  with torch.no_grad():
    for name, p in model.named_parameters():
      if "norm" in name and name.endswith("weight"):
        p.copy_(1.0 + 0.3 * torch.randn_like(p))
      else:
        p.copy_(scale * torch.randn_like(p))
  return model


def hf_projector(config: ProjectorConfig, seed: int = 0):
  """Upstream's mlp<N>x_gelu: nn.Sequential(Linear, GELU, Linear, ...)."""
  import torch
  torch.manual_seed(seed)
  modules = [torch.nn.Linear(config.in_features, config.out_features)]
  for _ in range(1, config.depth):
    modules += [torch.nn.GELU(), torch.nn.Linear(config.out_features, config.out_features)]
  return torch.nn.Sequential(*modules).eval()


def tokenizer_json(tokens: TokenIds = TOKENS, vocab_size: int = TEXT.vocab_size) -> str:
  """A word-level tokenizer.json whose LLaDA special tokens sit at `tokens`' ids."""
  import tokenizers
  special = {getattr(tokens, name): text for name, text in TokenIds.TEXTS.items()}
  vocab = {special.get(i, f"w{i}"): i for i in range(vocab_size)}
  backend = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="w0"))
  backend.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
  backend.add_special_tokens([tokenizers.AddedToken(text, special=True, normalized=False)
                              for _, text in sorted(special.items())])
  return backend.to_str()


def state_dict_numpy(module, prefix: str = "") -> dict[str, np.ndarray]:
  return {prefix + k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}

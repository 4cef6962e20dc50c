"""Upstream's decode loop re-stated in torch, as a yardstick for the sampler benchmarks.

Upstream LLaDA-V (`generate_with_embeds`) evaluates the whole canvas every step, applies the LM head
to every position, takes the float64 softmax over the whole vocabulary at every position, suppresses
EOS, BOS and the header ids at masked positions and commits, per block and step, the quota of the most
confident masked predictions (sorted top-k). Here the model is transformers' torch Llama with a full
(non-causal) mask and the language tower's weights; the prompt's embeddings (image features spliced
in) come from the project's model once per answer, as upstream's vision tower runs once too.
Batch size 1 per call, as upstream. Also recorded: the step that committed each position and how
close each step's choice was, so that a benchmark can tell a float32 near-tie from a difference of
rule where its decode parts from this one.
"""

import dataclasses

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from lladav_jax.convert import key_map
from lladav_jax.diffusion.settings import SamplerSettings
from lladav_jax.models import LLaDAV
from lladav_jax.samples import collate, model_inputs


def torch_language_model(model: LLaDAV, params) -> LlamaForCausalLM:
  """transformers' Llama holding the language tower of `params` (scanned layers), float32."""
  text = model.config.text
  hf = LlamaForCausalLM(LlamaConfig(
      vocab_size=text.vocab_size, hidden_size=text.hidden_size, intermediate_size=text.intermediate_size,
      num_hidden_layers=text.num_hidden_layers, num_attention_heads=text.num_attention_heads,
      num_key_value_heads=text.num_key_value_heads, head_dim=text.head_dim, rope_theta=text.rope_theta,
      rms_norm_eps=text.rms_norm_eps, max_position_embeddings=text.max_position_embeddings,
      tie_word_embeddings=False))
  entries = key_map.llada_entries(text, scan=model.compute.scan_layers)
  state = {key: torch.from_numpy(np.array(value, np.float32))
           for key, value in key_map.params_to_hf(params["params"]["language_model"], entries)}
  hf.load_state_dict(state, strict=True)
  return hf.eval()


@dataclasses.dataclass
class UpstreamDecode:
  tokens: np.ndarray  # int64 [gen_length]
  commit_steps: np.ndarray  # int32 [gen_length], the step that committed each position
  margins: np.ndarray  # float64 [steps]: how close each step's choice was, (p_last_kept - p_first_left) / p_last_kept


def upstream_generate(hf: LlamaForCausalLM, prompt_embeds: np.ndarray, settings: SamplerSettings,
                      mask_id: int) -> UpstreamDecode:
  """prompt_embeds float32 [P, D] (one unpadded prompt); settings resolved."""
  s = settings
  gen, block, per_block = s.gen_length, s.block_length, s.steps_per_block
  prompt = torch.from_numpy(np.array(prompt_embeds, np.float32))[None]
  length = prompt.shape[1] + gen
  full_mask = torch.ones(1, 1, length, length, dtype=torch.bool)
  x = torch.full((1, gen), mask_id, dtype=torch.long)
  commit_steps, margins = np.full(gen, -1, np.int32), []
  embed = hf.get_input_embeddings()
  with torch.no_grad():
    for b in range(s.num_blocks):
      lo, hi = b * block, (b + 1) * block
      count = int((x[0, lo:hi] == mask_id).sum())
      quotas = [count // per_block + (i < count % per_block) for i in range(per_block)]
      for quota in quotas:
        masked = x[0] == mask_id
        embeds = torch.cat([prompt, embed(x)], dim=1)
        logits = hf(inputs_embeds=embeds, attention_mask=full_mask).logits[0]  # every position, as upstream
        logits = logits[:, :s.vocab_limit].to(torch.float64)
        canvas_masked = torch.cat([torch.zeros(prompt.shape[1], dtype=torch.bool), masked])
        for t in s.suppressed_ids:
          logits[canvas_masked, t] = -torch.inf
        probs = torch.softmax(logits, dim=-1)
        x0 = probs.argmax(-1)[-gen:]
        confidence = torch.gather(probs[-gen:], -1, x0[:, None])[:, 0]
        confidence[hi:] = -torch.inf
        confidence = torch.where(masked, confidence, torch.tensor(-torch.inf, dtype=torch.float64))
        chosen = torch.topk(confidence, quota).indices
        x[0, chosen] = x0[chosen]
        commit_steps[chosen.numpy()] = len(margins)
        margins.append(decision_margin(torch.sort(confidence, descending=True).values, quota))
  return UpstreamDecode(x[0].numpy(), commit_steps, np.asarray(margins))


def decision_margin(ranked: torch.Tensor, quota: int) -> float:
  """How close a top-`quota` choice was: (p_kept - p_left) / p_kept of the last confidence kept and the
  first left (`ranked` descending, -inf for non-candidates); inf when nothing was left to compete."""
  if quota == 0 or quota >= len(ranked) or not torch.isfinite(ranked[quota]):
    return float("inf")
  kept, left = float(ranked[quota - 1]), float(ranked[quota])
  return (kept - left) / kept


def prompt_embeddings(model: LLaDAV, params, sample) -> np.ndarray:
  """One sample's prompt embeddings [P, D] (image features spliced in), unpadded."""
  batch = collate([[sample]], sample.length, sample.num_crops, model.config)
  inputs = model_inputs(batch)
  embeds = model.apply(params, inputs["input_ids"], inputs["image_mask"], inputs["image_index"],
                       inputs["image_weight"], inputs["pixel_values"], method=LLaDAV.embed_inputs)
  return np.asarray(embeds[0], np.float32)

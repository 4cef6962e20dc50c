"""The demo tokenizer loads like a real LLaDA tokenizer and agrees with transformers."""

import json

from lladav_jax.data.prompts import build_prompt
from lladav_jax.data.tokenizer import Tokenizer
from lladav_jax.demo import tokenizer as demo_tokenizer
from lladav_jax.demo.tokenizer import SPECIAL_TOKENS, TOKEN_IDS

CORPUS = ["What color is the triangle?", "How many circles are there?", "a red circle and two blue squares.",
          "Answer with one word."]


def test_special_tokens_and_template_pieces(tmp_path):
  path = demo_tokenizer.save(tmp_path / "tok", CORPUS + ["x\n\ny"] * 50, vocab_size=300)
  tok = Tokenizer.from_dir(path)
  tok.check_token_ids(TOKEN_IDS)
  assert [tok.encode(t, add_special_tokens=False) for t in SPECIAL_TOKENS] == [[i] for i in range(len(SPECIAL_TOKENS))]
  # A prompt ends with the assistant header's blank line; training saw the answer right after it.
  header = "<|start_header_id|>assistant<|end_header_id|>\n\n"
  assert len(tok.encode("\n\n", add_special_tokens=False)) == 1
  prompt_ids = tok.encode(header, add_special_tokens=False)
  assert tok.encode(header + "red", add_special_tokens=False)[:len(prompt_ids)] == prompt_ids
  ids = build_prompt(tok, "What color is the triangle?", 1, system_prompt="Answer with one word.")
  text = tok.decode([i for i in ids if i >= 0])
  assert text.endswith("<|start_header_id|>assistant<|end_header_id|>\n\n")
  assert not (tmp_path / "tok.partial").exists()
  assert json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())["eos_token"] == SPECIAL_TOKENS[1]


def test_transformers_reads_the_same_ids(tmp_path):
  from transformers import AutoTokenizer
  path = demo_tokenizer.save(tmp_path / "tok", CORPUS, vocab_size=300)
  ours, theirs = Tokenizer.from_dir(path), AutoTokenizer.from_pretrained(path)
  for text in CORPUS + ["<|start_header_id|>user<|end_header_id|>\n\nHow many squares?<|eot_id|>"]:
    for add in (True, False):
      assert ours.encode(text, add_special_tokens=add) == theirs.encode(text, add_special_tokens=add), text
  assert theirs.eos_token_id == TOKEN_IDS.eos and theirs.pad_token_id == TOKEN_IDS.eos

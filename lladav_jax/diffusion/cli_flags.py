"""Decoding options shared by the generate and eval command lines."""

import argparse


def add_decoding_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
  """Temperature, guidance, remasking, KV caching and parallel-decoding flags (SamplerSettings fields)."""
  parser.add_argument("--temperature", type=float, default=0.0)
  parser.add_argument("--cfg", type=float, default=0.0, help="classifier-free guidance scale")
  parser.add_argument("--remasking", choices=["low_confidence", "random"], default="low_confidence")
  parser.add_argument("--cache", choices=["none", "prefix", "dual"], default="none")
  parser.add_argument("--refresh", type=int, help="refresh the KV cache every r steps of a block")
  parser.add_argument("--threshold", type=float, help="parallel decoding: commit every prediction with p >= this")
  parser.add_argument("--factor", type=float, help="parallel decoding by Fast-dLLM's factor rule")

"""`python -m lladav_jax.data FILE... [--index-dir DIR]`: build the record indexes ahead of a run (once,
on one host, instead of every process scanning the files at start)."""

import argparse

import numpy as np

from lladav_jax.data.sources import load_or_build_index


def main(argv: list[str] | None = None) -> None:
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument("files", nargs="+", help="LLaVA .json / .jsonl data files")
  parser.add_argument("--index-dir", default=None, help="where to write the indexes (default: next to the files)")
  args = parser.parse_args(argv)
  for path in args.files:
    index = load_or_build_index(path, args.index_dir)
    print(f"{path}: {np.load(index, mmap_mode='r').shape[0]} records, index {index}")


if __name__ == "__main__":
  main()

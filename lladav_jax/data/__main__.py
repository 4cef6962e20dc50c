"""`python -m lladav_jax.data FILE... [--index-dir DIR]`: build the record indexes ahead of a run (once,
on one host, instead of every process scanning the files at start).

Exit status 0 when every file was indexed and holds records; 1 otherwise, with one line on stderr per
file that could not be used (missing, unreadable, not a JSON array / JSON lines, no records).
"""

import argparse
import sys

import numpy as np

from lladav_jax.data.sources import SourceError, load_or_build_index


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("files", nargs="+", help="LLaVA .json / .jsonl data files")
  parser.add_argument("--index-dir", default=None, help="where to write the indexes (default: next to the files)")
  args = parser.parse_args(argv)
  failed = 0
  for path in args.files:
    try:
      index = load_or_build_index(path, args.index_dir)
    except SourceError as e:
      print(f"error: {e}", file=sys.stderr)
      failed += 1
      continue
    count = np.load(index, mmap_mode="r").shape[0]
    if count == 0:
      print(f"error: {path}: no records", file=sys.stderr)
      failed += 1
      continue
    print(f"{path}: {count} records, index {index}")
  return 1 if failed else 0


if __name__ == "__main__":
  sys.exit(main())

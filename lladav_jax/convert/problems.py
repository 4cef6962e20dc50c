"""The one error a conversion raises: every problem found, each naming its file, key or shape."""


class ConversionError(ValueError):
  """Raised before anything is written, listing all problems together (one per line)."""

  def __init__(self, what: str, problems: list[str]):
    self.what = what
    self.problems = list(problems)
    lines = "\n".join(f"  - {p}" for p in self.problems)
    super().__init__(f"{what}: {len(self.problems)} problem(s)\n{lines}")

  def one_line(self) -> str:
    """The first problem, and how many more: for a command line that reports in one line."""
    more = len(self.problems) - 1
    return f"{self.what}: {self.problems[0]}" + (f" (and {more} more problems)" if more > 0 else "")

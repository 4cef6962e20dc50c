"""The package's imports follow the map in docs/design.md: layers import only downwards, nothing forms
a cycle, no library module imports a command line, and nothing imports configs/ or tools/.

Every import statement of every module counts, the ones inside functions too.
"""

import ast
import fnmatch
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "lladav_jax"
DESIGN = ROOT / "docs" / "design.md"
OUTSIDE = ("configs", "tools")  # beside the package in the checkout, never installed


def read_layers(text: str) -> list[list[str]]:
  """The units of each row of the "Package map" table, top layer first."""
  section = text.split("## Package map", 1)[1].split("\n## ", 1)[0]
  rows = [line for line in section.splitlines() if line.startswith("|") and "`" in line.split("|")[2]]
  return [re.findall(r"`([^`]+)`", row.split("|")[2]) for row in rows]


def unit_of(relative: str, layers: list[list[str]]) -> str:
  """The map entry a module (path relative to lladav_jax/) belongs to: a file pattern
  (`*/__main__.py`), a directory (`models/`) or a top-level module (`tokens`)."""
  entries = [entry for layer in layers for entry in layer]
  for entry in entries:
    if entry.endswith(".py") and fnmatch.fnmatch(relative, entry):
      return entry
  first = relative.split("/")[0]
  for entry in entries:
    if entry == first + "/" or entry == first.removesuffix(".py"):
      return entry
  raise AssertionError(f"lladav_jax/{relative} is in no unit of the package map in docs/design.md")


def module_file(name: str) -> pathlib.Path | None:
  """lladav_jax.a.b -> its file (module or package __init__), None when it is no module."""
  path = ROOT.joinpath(*name.split("."))
  for candidate in (path.with_suffix(".py"), path / "__init__.py"):
    if candidate.is_file():
      return candidate
  return None


def imports_of(path: pathlib.Path) -> list[tuple[int, str]]:
  """(line, imported module) for every import; `from lladav_jax import x` names x itself when x is a
  module, else "lladav_jax:x" (a name of the package facade)."""
  found = []
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      found += [(node.lineno, alias.name) for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:
        sub = f"{node.module}.{alias.name}"
        if module_file(sub) is not None:
          found.append((node.lineno, sub))
        elif node.module == "lladav_jax":
          found.append((node.lineno, f"lladav_jax:{alias.name}"))
        else:
          found.append((node.lineno, node.module))
  return found


def package_imports() -> dict[str, list[tuple[int, str]]]:
  """{path relative to lladav_jax/: imports} for every module but the package facade (__init__.py)."""
  return {path.relative_to(PACKAGE).as_posix(): imports_of(path) for path in sorted(PACKAGE.rglob("*.py"))
          if path != PACKAGE / "__init__.py"}


def violations(modules: dict[str, list[tuple[int, str]]], layers: list[list[str]]) -> list[str]:
  """Every import that breaks the map, and every cycle between units."""
  level = {entry: i for i, layer in enumerate(layers) for entry in layer}  # 0 = the top layer
  problems, edges = [], {}
  for relative, imports in modules.items():
    source = unit_of(relative, layers)
    for line, name in imports:
      where = f"lladav_jax/{relative}:{line}"
      top = name.split(".")[0]
      if top in OUTSIDE:
        problems.append(f"{where} imports {name} (configs/ and tools/ are not part of the package)")
        continue
      if name.startswith("lladav_jax:"):
        problems.append(f"{where} imports {name.split(':')[1]} from the package facade; import its module")
        continue
      if top != "lladav_jax" or name == "lladav_jax":
        continue
      target_file = module_file(name)
      target = unit_of(target_file.relative_to(PACKAGE).as_posix(), layers)
      if target == source:
        continue
      edges.setdefault(source, set()).add(target)
      upward = level[target] < level[source]
      sideways = level[target] == level[source] and level[source] != 0  # entry points may use each other
      if upward or sideways:
        problems.append(f"{where} ({source}) imports {name} ({target}), which is not in a lower layer")
  problems += [f"import cycle: {' -> '.join(cycle)}" for cycle in cycles(edges)]
  return problems


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
  found, state = [], {}

  def visit(node, stack):
    state[node] = "open"
    for nxt in sorted(edges.get(node, ())):
      if state.get(nxt) == "open":
        found.append(stack[stack.index(nxt):] + [nxt])
      elif nxt not in state:
        visit(nxt, stack + [nxt])
    state[node] = "done"

  for node in sorted(edges):
    if node not in state:
      visit(node, [node])
  return found


def test_every_import_follows_the_map():
  layers = read_layers(DESIGN.read_text())
  assert len(layers) >= 5, layers
  problems = violations(package_imports(), layers)
  assert not problems, "\n".join(problems)


def test_every_unit_of_the_map_exists():
  for entry in (e for layer in read_layers(DESIGN.read_text()) for e in layer):
    if entry.endswith(".py"):
      assert list(PACKAGE.glob(entry)), entry
    else:
      assert (PACKAGE / entry).is_dir() or (PACKAGE / f"{entry}.py").is_file(), entry


LAYERS = [["cli", "*/__main__.py"], ["train/", "eval/"], ["models/", "images/"], ["tokens"]]


@pytest.mark.parametrize("modules,expected", [
    ({"models/a.py": [(3, "lladav_jax.train.loop")]}, "not in a lower layer"),
    ({"train/a.py": [(1, "lladav_jax.eval.runner")]}, "not in a lower layer"),
    ({"eval/a.py": [(1, "lladav_jax.cli")]}, "not in a lower layer"),
    ({"models/a.py": [(2, "configs.base")]}, "configs/ and tools/"),
    ({"train/a.py": [(2, "lladav_jax:load_pretrained")]}, "package facade"),
    ({"models/a.py": [(1, "lladav_jax.images.crops")], "images/b.py": [(1, "lladav_jax.models.layers")]},
     "import cycle"),
])
def test_the_checks_catch_what_they_are_for(modules, expected):
  assert any(expected in p for p in violations(modules, LAYERS)), violations(modules, LAYERS)


def test_the_checks_accept_downward_imports():
  modules = {"train/__main__.py": [(1, "lladav_jax.cli"), (2, "lladav_jax.train.loop")],
             "train/a.py": [(1, "lladav_jax.models.layers"), (2, "numpy")],
             "models/a.py": [(1, "lladav_jax.tokens")]}
  assert violations(modules, LAYERS) == []

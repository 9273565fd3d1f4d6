"""The house's rules, read from the sources: the lab's rooms import only downward (no circle, nothing upward,
imports inside functions and under TYPE_CHECKING included), the library names no command-line flag, and the
library's error module holds only errors the library raises."""

import ast
import re
from pathlib import Path

import pytest

import jaxdrop.errors

ROOT = Path(__file__).resolve().parents[2]

# The lab's floors, from the ground up: a module imports only modules of lower floors. An experiment script
# (experiments/e<N>_<name>.py) is found by its name; a new helper module takes a floor here.
FLOORS = [
    {"errors", "files", "timing", "calibration", "models", "signals"},  # shared helpers that know nothing of runs
    {"data"},
    {"config"},
    {"records"},
    {"plots", "run_folder", "runner"},
    {"command_line"},  # one experiment's command line: the scripts' __main__
    {"<scripts>"},
    {"registry"},  # finds the scripts
    {"reproduce"},  # loops over their parts
    {"replay"},
    {"cli"},  # the top dispatcher
    {"__main__"},
]
SCRIPT = re.compile(r"e\d+_\w+")


def floor_of(module: str) -> int:
  name = "<scripts>" if SCRIPT.fullmatch(module) else module
  return next(i for i, floor in enumerate(FLOORS) if name in floor)


def imported(path: Path) -> set[str]:
  """Every module of the repository that ``path`` imports, anywhere in it (in functions and under
  TYPE_CHECKING too)."""
  names = set()
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Import):
      names |= {alias.name for alias in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      names.add(node.module)
      names |= {f"{node.module}.{alias.name}" for alias in node.names}  # from experiments import cli
  return {n for n in names if n.split(".")[0] in ("experiments", "benchmarks")}


def lab_modules(package: str) -> list[Path]:
  return sorted(p for p in (ROOT / package).glob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", lab_modules("experiments"), ids=lambda p: p.name)
def test_every_experiments_module_imports_only_downward(path):
  here = floor_of(path.stem)
  for name in imported(path):
    parts = name.split(".")
    assert parts[0] != "benchmarks", f"{path.name} imports {name}: the benchmarks stand above the experiments"
    if len(parts) == 1 or not (ROOT / "experiments" / f"{parts[1]}.py").exists():
      continue  # the package itself, or a name in it
    there = floor_of(parts[1])
    assert there < here, f"{path.name} (floor {here}) imports {name} (floor {there})"


def test_the_benchmarks_import_no_command_dispatcher():
  for path in lab_modules("benchmarks"):
    for name in imported(path):
      assert name.split(".")[:2] not in (["experiments", "cli"], ["experiments", "__main__"]), \
          (path.name, name)


def test_the_floors_know_every_module():
  for path in lab_modules("experiments"):
    floor_of(path.stem)  # raises StopIteration for a module without a floor


def strings(path: Path):
  for node in ast.walk(ast.parse(path.read_text())):
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
      yield node.value


def test_the_library_names_no_command_line_flag():
  flag = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*(?![\w])")  # --epochs, --out; not XLA's --xla_... flags
  found = {f"{p.relative_to(ROOT)}: {m}" for p in (ROOT / "jaxdrop").rglob("*.py") for s in strings(p)
           for m in flag.findall(s)}
  assert not found, sorted(found)
  assert flag.findall("resume with --epochs 3") == ["--epochs"]  # the check can fail


def test_the_library_error_module_holds_only_errors_the_library_raises():
  sources = "\n".join(p.read_text() for p in (ROOT / "jaxdrop").rglob("*.py") if p.name != "errors.py")
  for name in jaxdrop.errors.__all__:
    if name != "JaxdropError":  # the base class
      assert re.search(rf"\b{name}\(", sources), f"jaxdrop.errors.{name} is never raised by the library"

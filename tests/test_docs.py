"""The documentation site builds strictly and documents every public name.

The pages' code blocks are doctested by pytest itself (``--doctest-glob='*.md'``
over ``docs/``, see pyproject.toml); this file builds the site.
"""

import importlib
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Every public module of the library and the namespace the API reference documents it under.
PUBLIC_MODULES = ("jaxdrop", "jaxdrop.attention", "jaxdrop.linen", "jaxdrop.nnx", "jaxdrop.training",
                  "jaxdrop.xla_cpu", "jaxdrop.errors")  # jaxdrop.training.xla_cpu is jaxdrop.xla_cpu
# Public names that are modules, each its own page (jaxdrop.training.xla_cpu is jaxdrop.xla_cpu's page).
SUBMODULES = {"jaxdrop.attention", "jaxdrop.xla_cpu", "jaxdrop.training.xla_cpu"}


def public_names():
  for module_name in PUBLIC_MODULES:
    module = importlib.import_module(module_name)
    for name in module.__all__:
      full = f"{module_name}.{name}"
      if full in SUBMODULES:
        continue
      obj = getattr(module, name)
      home = getattr(obj, "__module__", "") or ""
      # A name re-exported from another public module is documented there (training's errors live in errors).
      owner = next((m for m in PUBLIC_MODULES if m != module_name and home == m and name in
                    importlib.import_module(m).__all__), None)
      yield full if owner is None else f"{owner}.{name}"


@pytest.fixture(scope="module")
def built_site(tmp_path_factory):
  out = tmp_path_factory.mktemp("docs_html")
  proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                         str(ROOT / "docs"), str(out)], capture_output=True, text=True, cwd=ROOT, check=False)
  assert proc.returncode == 0, proc.stdout + proc.stderr
  return out


def test_the_docs_build_without_warnings(built_site):
  index = (built_site / "index.html").read_text()
  assert "jaxdrop" in index and "API reference" in index
  for page in ("dropout", "attention", "penalties", "optax", "layers", "training", "sharding", "reproducibility",
               "experiments", "bad_inputs", "benchmarks", "contributing", "changelog", "api/jaxdrop"):
    assert (built_site / f"{page}.html").is_file(), page


def test_every_public_name_is_in_the_api_reference(built_site):
  from sphinx.util.inventory import InventoryFile

  with open(built_site / "objects.inv", "rb") as f:
    inventory = InventoryFile.load(f, "", lambda base, uri: uri)
  documented = {name for kind, entries in inventory.items() if kind.startswith("py:") for name in entries}
  names = set(public_names())
  assert len(names) > 60
  missing = sorted(names - documented)
  assert not missing, f"public names missing from docs/api/: {missing}"


def test_the_name_list_can_fail():
  """The check above sees a name that is not documented (it is not vacuous)."""
  assert "jaxdrop.dropout" in set(public_names())
  assert "jaxdrop.errors.CheckpointError" in set(public_names())
  assert "jaxdrop.training.CheckpointError" not in set(public_names())  # documented once, under errors

"""The library imports only jax, flax, optax and numpy (and the standard library), and changes nothing
global on import; the training engine loads its optional dependencies only when it uses them."""

import subprocess
import sys

import pytest

BASE = "import jax, flax, flax.linen, flax.nnx, flax.training.train_state, optax, numpy"


def top_level_modules(code: str) -> set[str]:
  out = subprocess.run([sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"],
                       check=True, capture_output=True, text=True).stdout
  return {m.split(".")[0] for m in out.split()}


@pytest.mark.parametrize("modules", ["jaxdrop, jaxdrop.linen, jaxdrop.nnx", "jaxdrop.training"])
def test_importing_the_library_loads_nothing_beyond_jax_flax_optax_numpy(modules):
  baseline = top_level_modules(BASE)
  loaded = top_level_modules(f"{BASE}\nimport {modules}")
  extra = loaded - baseline - set(sys.stdlib_module_names) - {"jaxdrop"}
  assert not extra, f"import {modules} loads {sorted(extra)}"
  assert {"jax", "flax", "optax", "numpy"} <= loaded


def test_the_library_holds_no_experiment_cli_or_benchmark():
  import pkgutil

  import jaxdrop

  names = {m.name for m in pkgutil.walk_packages(jaxdrop.__path__, "jaxdrop.")}
  public = {n for n in names if not any(part.startswith("_") for part in n.split("."))}
  assert public == {"jaxdrop.attention", "jaxdrop.errors", "jaxdrop.linen", "jaxdrop.nnx", "jaxdrop.training",
                    "jaxdrop.training.xla_cpu"}

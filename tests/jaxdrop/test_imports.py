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


def test_a_missing_engine_dependency_names_the_extra():
  code = ("import sys; sys.modules['tqdm'] = None\n"  # as if tqdm were not installed
          "import types, jax.numpy as jnp, optax\n"
          "from jaxdrop import training\n"
          "x = jnp.ones((8, 1))\n"
          "data = types.SimpleNamespace(x_train=x, y_train=x, x_test=x, y_test=x)\n"
          "task = training.Task(lambda p, x, t, k: x * p['w'], training.half_squared_error, classification=False)\n"
          "try:\n"
          "  training.fit(task, {'w': jnp.zeros(())}, optax.sgd(0.1), data, epochs=1, batch_size=4, seed=0)\n"
          "except ImportError as e:\n"
          "  print(e)\n")
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
  assert "jaxdrop.training needs tqdm" in out and "pip install 'jaxdrop[training]'" in out

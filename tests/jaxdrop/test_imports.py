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


@pytest.mark.parametrize("modules", ["jaxdrop, jaxdrop.linen, jaxdrop.nnx", "jaxdrop.training",
                                     "jaxdrop.xla_cpu"])
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
                    "jaxdrop.training.xla_cpu", "jaxdrop.xla_cpu"}


def test_the_xla_cpu_kernels_work_without_the_training_extra():
  code = ("import sys\n"
          "for name in ('orbax', 'orbax.checkpoint', 'tqdm', 'tqdm.auto'):\n"
          "  sys.modules[name] = None  # as if the training extra were not installed\n"
          "import flax.linen as nn, jax, jax.numpy as jnp, numpy as np\n"
          "from jaxdrop.xla_cpu import conv_general_dilated, max_pool\n"
          "x = jnp.arange(2 * 6 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 6, 3) % 7\n"
          "pooled = max_pool(x, (3, 3), (2, 2), 'SAME')\n"
          "np.testing.assert_array_equal(pooled, nn.max_pool(x, (3, 3), (2, 2), 'SAME'))  # the same maxima\n"
          # a 4x4 kernel over a 3x3 map: the patch path
          "conv = nn.Conv(4, (4, 4), padding='SAME', conv_general_dilated=conv_general_dilated)\n"
          "params = conv.init(jax.random.key(0), pooled)\n"
          "expected = nn.Conv(4, (4, 4), padding='SAME').apply(params, pooled)\n"  # summed in another order
          "np.testing.assert_allclose(conv.apply(params, pooled), expected, rtol=1e-5, atol=1e-5)\n"
          "print(pooled.shape, 'jaxdrop.training' in sys.modules)\n")
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
  assert out.split() == ["(2,", "3,", "3,", "3)", "False"]  # pooled, and the engine was not imported


def test_the_engine_s_name_is_the_same_module():
  import jaxdrop.training.xla_cpu
  import jaxdrop.xla_cpu
  from jaxdrop import training
  from jaxdrop.training.xla_cpu import max_pool

  assert jaxdrop.training.xla_cpu is jaxdrop.xla_cpu is training.xla_cpu
  assert max_pool is jaxdrop.xla_cpu.max_pool


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

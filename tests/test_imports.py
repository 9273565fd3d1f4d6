"""The library imports only what it needs, and changes nothing global on import."""

import subprocess
import sys

OPTIONAL = ("tqdm", "matplotlib", "orbax", "tensorflow_datasets", "sklearn", "scipy", "torch", "tensorstore")


def run(code: str) -> str:
  return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_importing_the_library_loads_no_optional_dependency():
  loaded = run("import sys, jaxdrop, jaxdrop.linen, jaxdrop.nnx\n"
               "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))").split()
  assert not set(OPTIONAL) & set(loaded)
  assert {"jax", "flax", "optax", "numpy"} <= set(loaded)


def test_the_plotting_module_leaves_the_matplotlib_backend_alone():
  backend = run("import matplotlib; matplotlib.use('svg'); import jaxdrop.plotting; print(matplotlib.get_backend())")
  assert backend == "svg"

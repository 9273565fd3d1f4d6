"""jaxdrop ships like a package: a wheel and an sdist that build offline, a wheel that works outside the
repository, and a library that lints and type-checks clean."""

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile

import pytest

import jaxdrop

ROOT = pathlib.Path(__file__).resolve().parent.parent

QUICKSTART = """
import jax, jax.numpy as jnp
import jaxdrop
from jaxdrop import linen as jdl, nnx as jdx
assert jaxdrop.__file__.startswith({venv!r}), jaxdrop.__file__   # the wheel's copy, not the checkout's
x = jnp.arange(16, dtype=jnp.float32).reshape(2, 8)
y = jaxdrop.dropout(jax.random.key(0), x, 0.5)
assert bool(jnp.all((y == 0) | (y == 2 * x)))
assert float(jaxdrop.l2_penalty({{"kernel": jnp.ones((3, 2)), "bias": jnp.ones(2)}})) == 3.0
print(jaxdrop.__version__)
"""


def run(*args, **kwargs):
  proc = subprocess.run(args, capture_output=True, text=True, check=False, **kwargs)
  assert proc.returncode == 0, f"{args}:\n{proc.stdout}\n{proc.stderr}"
  return proc.stdout


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
  """The wheel and the sdist, built from this checkout without network (the installed setuptools)."""
  out, source = tmp_path_factory.mktemp("dist"), tmp_path_factory.mktemp("source") / "jaxdrop"
  # From a copy: the build writes jaxdrop.egg-info and build/ beside the sources.
  shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(".git", ".venv", "runs", "_build", "__pycache__", "*.egg-info"))
  run(sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source))  # the wheel from the sdist
  (wheel,), (sdist,) = out.glob("*.whl"), out.glob("*.tar.gz")
  return wheel, sdist


def test_the_wheel_holds_the_library_its_license_and_types(dist):
  wheel, _ = dist
  assert wheel.name.startswith(f"jaxdrop-{jaxdrop.__version__}-py3-none-any")
  names = zipfile.ZipFile(wheel).namelist()
  tops = {name.split("/")[0] for name in names}
  assert tops == {"jaxdrop", f"jaxdrop-{jaxdrop.__version__}.dist-info"}, tops  # no experiments, benchmarks, tests
  assert "jaxdrop/py.typed" in names and "jaxdrop/training/xla_cpu.py" in names and "jaxdrop/xla_cpu.py" in names
  assert any(name.endswith("licenses/LICENSE") for name in names), names
  metadata = zipfile.ZipFile(wheel).read(f"jaxdrop-{jaxdrop.__version__}.dist-info/METADATA").decode()
  assert "License-Expression: Apache-2.0" in metadata and f"Version: {jaxdrop.__version__}" in metadata


def test_the_sdist_holds_the_sources_license_and_changelog(dist):
  _, sdist = dist
  names = {name.split("/", 1)[-1] for name in tarfile.open(sdist).getnames()}
  assert {"LICENSE", "README.md", "pyproject.toml", "jaxdrop/__init__.py", "jaxdrop/py.typed"} <= names


def test_the_wheel_works_outside_the_repository(dist, tmp_path):
  """A fresh venv with the wheel and, for its dependencies, this environment's site-packages (no network)."""
  wheel, _ = dist
  # The root conftest points PYTHONPATH at the checkout, where an editable install leaves jaxdrop.egg-info: pip
  # would take that for an installed jaxdrop and skip the wheel, and python would import the checkout's copy.
  clean = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
  venv = tmp_path / "venv"
  run(sys.executable, "-m", "venv", "--without-pip", str(venv), env=clean)
  python = venv / "bin" / "python"
  site = pathlib.Path(run(str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                          env=clean).strip())
  run(sys.executable, "-m", "pip", "--python", str(python), "install", "--no-index", "--no-deps", "-q", str(wheel),
      cwd=tmp_path, env=clean)
  assert (site / "jaxdrop" / "__init__.py").is_file(), sorted(p.name for p in site.iterdir())
  # Then the dependencies, from this environment; its .pth files (this checkout's editable install) are not read.
  (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
  outside = tmp_path / "elsewhere"
  outside.mkdir()
  printed = run(str(python), "-c", QUICKSTART.format(venv=str(venv)), cwd=outside, env=clean)
  assert printed.strip() == jaxdrop.__version__


def test_ruff_is_clean_on_the_library():
  run(sys.executable, "-m", "ruff", "check", "jaxdrop", cwd=ROOT)


def test_mypy_is_clean_on_the_library():
  run(sys.executable, "-m", "mypy", "jaxdrop", cwd=ROOT)

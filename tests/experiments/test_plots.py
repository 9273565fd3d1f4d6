"""The figures: PNG files, drawn without touching the user's matplotlib backend."""

import subprocess
import sys
from pathlib import Path

from experiments.plots import plot_curves

ROOT = Path(__file__).resolve().parents[2]


def test_the_plotting_module_leaves_the_matplotlib_backend_alone():
  code = "import matplotlib; matplotlib.use('svg'); import experiments.plots; print(matplotlib.get_backend())"
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
  assert out.stdout.strip() == "svg"


def test_plot_curves_writes_a_png_per_call(tmp_path):
  runs = [{"name": "a", "history": {"epoch": [1, 2], "train_loss": [1.0, 0.5]}}]
  path = plot_curves(tmp_path / "c.png", runs, ("train_loss",), title="t")
  assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

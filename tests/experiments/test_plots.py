"""The figures: PNG files that say what they show (y labels, limits from the data, log scales where a quantity
spans decades, seed bands within the metric's range, bin counts), drawn without touching the user's matplotlib
backend."""

import subprocess
import sys
from pathlib import Path

import numpy as np

from experiments.calibration import reliability
from experiments.plots import draw_curves, draw_estimates, draw_intervals, draw_reliability, plot_curves, spans_decades

ROOT = Path(__file__).resolve().parents[2]


def test_the_plotting_module_leaves_the_matplotlib_backend_alone():
  code = "import matplotlib; matplotlib.use('svg'); import experiments.plots; print(matplotlib.get_backend())"
  out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, cwd=ROOT)
  assert out.stdout.strip() == "svg"


def test_plot_curves_writes_a_png_per_call(tmp_path):
  runs = [{"name": "a", "history": {"epoch": [1, 2], "train_loss": [1.0, 0.5]}}]
  path = plot_curves(tmp_path / "c.png", runs, {"loss": ("train_loss",)}, title="t")
  assert Path(path).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def history(train_loss, acc):
  epochs = list(range(1, len(train_loss) + 1))
  return {"epoch": epochs, "train_loss": train_loss, "test_loss": train_loss, "train_acc": acc,
          "test_acc": acc}


def test_every_panel_has_a_y_label_and_limits_from_the_data():
  # E7's L1 run sits at a loss of 2.3 while the others fall to 0.002: a fixed (0, 1) would hide it.
  runs = [{"name": "none", "history": history([2.3, 0.1, 0.002], [0.1, 0.9, 1.0])},
          {"name": "l1", "history": history([2.3, 2.3, 2.3], [0.1, 0.1, 0.1])}]
  loss, acc = draw_curves(runs).axes
  assert loss.get_ylabel() == "cross-entropy loss (log scale)" and loss.get_yscale() == "log"
  assert acc.get_ylabel() == "accuracy" and acc.get_yscale() == "linear"
  low, high = loss.get_ylim()
  assert low <= 0.002 and high >= 2.3  # every value is inside the axes
  low, high = acc.get_ylim()
  assert low <= 0.1 and 1.0 <= high < 1.1


def test_a_panel_that_does_not_span_decades_stays_linear():
  runs = [{"name": "a", "history": history([0.9, 0.5, 0.3], [0.5, 0.6, 0.7])}]
  assert [ax.get_yscale() for ax in draw_curves(runs).axes] == ["linear", "linear"]
  assert spans_decades([0.002, 2.3]) and not spans_decades([0.1, 0.9]) and not spans_decades([-1.0, 100.0])


def test_seed_bands_are_drawn_and_stay_within_the_metrics_range():
  seeds = [history([1.0, 0.5], [0.9, 1.0]), history([1.2, 0.1], [0.7, 1.0]),
           history([0.8, 0.3], [0.95, 0.98])]
  mean = {k: np.mean([h[k] for h in seeds], axis=0).tolist() for k in seeds[0]}
  run = {"name": "mlp", "history": mean, "per_seed": [{"history": h} for h in seeds]}
  fig = draw_curves([run])
  assert "± 1 sd over the seeds" in fig.get_suptitle()
  acc = fig.axes[1]
  assert len(acc.collections) == 2  # the bands of train and test
  top = max(path.vertices[:, 1].max() for collection in acc.collections for path in collection.get_paths())
  assert top <= 1.0  # the mean + sd of an accuracy near 1 is cut at 1


def test_separate_rows_for_runs_of_other_lengths():
  runs = [{"name": "mlp", "history": history([1.0] * 100, [0.5] * 100)},
          {"name": "convnet", "history": history([2.0] * 8, [0.3] * 8)}]
  fig = draw_curves(runs, separate=True)
  assert len(fig.axes) == 4 and {ax.get_xlim()[1] < 10 for ax in fig.axes[2:]} == {True}
  assert [fig.axes[0].get_title(loc="left"), fig.axes[2].get_title(loc="left")] == ["mlp", "convnet"]


def test_the_reliability_diagram_shows_the_count_of_each_bin():
  rng = np.random.default_rng(0)
  probs = rng.dirichlet(np.ones(3) * 0.3, size=500)
  labels = rng.integers(0, 3, size=500)
  table = {k: v.tolist() for k, v in reliability(probs, labels, 10).items()}
  top, bottom = draw_reliability({"model": table}).axes
  assert top.get_ylabel() == "accuracy in the bin" and bottom.get_ylabel() == "examples (log scale)"
  heights = sorted(bar.get_height() for bar in bottom.patches)
  assert heights == sorted(c for c in table["count"] if c > 0) and sum(heights) == 500


def test_estimates_put_ours_beside_the_published_rows_with_their_errors():
  rows = {"ours": {"rmse": {"mean": 3.1, "se": 0.2}, "ll": {"mean": -2.5, "se": 0.05}, "ours": True},
          "published": {"rmse": {"mean": 2.97, "se": 0.19}, "ll": {"mean": -2.46, "se": 0.06}}}
  rmse, ll = draw_estimates(rows).axes
  assert [t.get_text() for t in rmse.get_yticklabels()] == ["ours", "published"]  # top to bottom
  assert "RMSE" in rmse.get_xlabel() and "log-likelihood" in ll.get_xlabel()
  low, high = rmse.get_xlim()
  assert low < 2.97 - 0.19 and high > 3.1 + 0.2  # the error bars are inside the panel
  colours = [line.get_color() for line in rmse.lines if line.get_marker() == "o"]
  assert colours[0] != colours[1]  # ours in colour, the published row in grey


def test_intervals_draw_a_line_per_series_at_the_given_positions():
  summary = lambda m: {"mean": m, "ci95": [m - 0.01, m + 0.02]}  # noqa: E731
  ax = draw_intervals([100, 1000], {"a": [summary(0.2), summary(0.1)], "b": [summary(0.3), summary(0.2)]},
                      xlabel="images", ylabel="error", log_x=True).axes[0]
  assert ax.get_xscale() == "log" and ax.get_ylabel() == "error"
  assert [line.get_ydata().tolist() for line in ax.lines if line.get_marker() == "o"] == [[0.2, 0.1], [0.3, 0.2]]

"""``python -m experiments reproduce``: the offline suite and its ``report.md``.

Runs, without any download: E3 (both versions, several seeds), dropout versus
no dropout on the digits (E2's MLP, several seeds trained together), E7 (L1
and L2 penalties), E6 (tutorial 002's small networks), E8 (a Vision
Transformer, jaxdrop against Flax's dropout and optax.adamw) and E9 (MC dropout's
calibration and predictive entropy); then writes a
report with every figure beside the source tutorial's figure where one exists.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from pathlib import Path
from typing import Any

import numpy as np

import jaxdrop
from experiments.data import load_dataset
from experiments.e2_d2l_mlp import E2Config, build
from experiments.e8_vit import E8Config
from experiments.plots import plot_curves
from experiments.records import environment, run_entry, write_json
from experiments.registry import run_experiment
from experiments.runner import Emit, epochs_for
from jaxdrop import training

__all__ = ["PARTS", "compare_dropout", "reproduce"]

# The MatConvNet network is the slow part on a CPU; the suite trains it briefly, and E8's transformer with
# two blocks instead of three (compiling it is most of its time) and fewer epochs.
CONVNET_EPOCHS = 8
VIT_EPOCHS = 12
VIT_DEPTH = 2
E8_DEFAULTS = E8Config()
# The subfolders reproduce writes, in order: registered experiments' runs, and compare_dropout's "dropout".
PARTS = ("e3", "dropout", "e7", "e6", "e8", "e9")


def _mean_sd(values) -> str:
  values = np.asarray(values, np.float64)
  return f"{values.mean():.4f} ± {_sd(values):.4f}"


def _sd(values) -> float:
  """The sample standard deviation (``ddof=1``), as ``run --seeds`` reports it; 0 for one value."""
  values = np.asarray(values, np.float64)
  return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def compare_dropout(out_dir: Path, seeds: int, emit: Emit, quiet: bool, epochs: int | None = None) -> dict[str, Any]:
  """E2's MLP on the digits with dropout 0.2/0.5 and without, ``seeds`` runs each (vmapped).

  ``epochs`` defaults to the source tutorial's number of SGD steps (see ``epochs_for``).

  Returns:
    The record written to ``out_dir/record.json``: per configuration, each
    seed's final metrics and the mean and standard deviation of the test
    accuracy and of the train-test accuracy gap.
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  started = time.perf_counter()
  data = load_dataset("digits")
  base = E2Config(dataset="digits", epochs=epochs)
  epochs = epochs_for(base, data, "fashion_mnist", 10, emit)
  seed_list = list(range(seeds))
  configs = {"dropout 0.2/0.5": (0.2, 0.5), "no dropout": (0.0, 0.0)}
  record: dict[str, Any] = {
      "experiment": "dropout_vs_none", "dataset": data.note, "seeds": seed_list, "epochs": epochs,
      "config": dataclasses.asdict(base), "environment": environment(), "groups": {},
  }
  mean_runs = []
  for label, (r1, r2) in configs.items():
    task, init = build("concise", dataclasses.replace(base, dropout1=r1, dropout2=r2), data)
    results = training.fit_seeds(task, init, jaxdrop.sgd(base.lr), data, seeds=seed_list, epochs=epochs, batch_size=base.batch_size, quiet=quiet,
                               description=label, eval_every=max(1, epochs // 40))
    runs = [dict(run_entry(label, r), seed=s) for s, r in zip(seed_list, results, strict=True)]
    test_acc = [r["final"]["test_acc"] for r in runs]
    gap = [r["final"]["train_acc"] - r["final"]["test_acc"] for r in runs]
    test_loss = [r["final"]["test_loss"] for r in runs]
    record["groups"][label] = {
        "runs": runs,
        "test_acc_mean": float(np.mean(test_acc)), "test_acc_sd": _sd(test_acc),
        "gap_mean": float(np.mean(gap)), "gap_sd": _sd(gap),
        "test_loss_mean": float(np.mean(test_loss)), "test_loss_sd": _sd(test_loss),
    }
    emit(f"{label}: test acc {_mean_sd(test_acc)}, train-test gap {_mean_sd(gap)}, test loss {_mean_sd(test_loss)}"
         f" over {seeds} seeds")
    history = {k: np.mean([r["history"][k] for r in runs], axis=0).tolist() for k in runs[0]["history"]}
    mean_runs.append({"name": f"{label} (mean of {seeds} seeds)", "history": history})
  plot_curves(out_dir / "curves.png", mean_runs, ("train_loss", "train_acc", "test_acc", "test_loss"),
              title="dropout vs none on the digits (E2's MLP)")
  record["figures"] = ["curves.png"]
  record["wall_time_s"] = round(time.perf_counter() - started, 3)
  write_json(out_dir / "record.json", record)
  return record


def reproduce(out_dir: str | Path, *, seeds: int = 5, emit: Emit = print, quiet: bool = True) -> Path:
  """Runs the offline suite into ``out_dir`` and writes ``out_dir/report.md``.

  Args:
    out_dir: an existing, empty folder.
    seeds: runs per configuration of the dropout comparison (and of E3).
    emit: receives progress lines.
    quiet: no progress bars.

  Returns:
    The path of ``report.md``.
  """
  out_dir = Path(out_dir)
  started = time.perf_counter()
  records: dict[str, Any] = {}
  for name in PARTS:
    emit(f"== {name}")
    sub = out_dir / name
    options = {"e3": {"seeds": seeds}, "dropout": None, "e7": {}, "e6": {"convnet_epochs": CONVNET_EPOCHS},
               "e8": {"epochs": VIT_EPOCHS, "depth": VIT_DEPTH}, "e9": {"seeds": seeds}}[name]
    if options is None:
      records[name] = compare_dropout(sub, seeds, emit, quiet)
      continue
    sub.mkdir(parents=True, exist_ok=True)
    records[name] = run_experiment(name, sub, emit=emit, quiet=quiet, **options)
  report = out_dir / "report.md"
  report.write_text(render_report(records, time.perf_counter() - started, seeds))
  return report


def _acc(run, key):
  return f"{run['final'][key]:.4f}"


def render_report(records: dict[str, Any], wall_time: float, seeds: int) -> str:
  """The Markdown report: one table per part, the source tutorials' figures beside ours, links to the PNGs."""
  env = records["e3"]["environment"]
  lines = [
      "# jaxdrop: reproduction report",
      "",
      f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; jax {env['jax']}, flax {env['flax']},"
      f" optax {env['optax']}; {env['backend']} ({env['device_kind']}, {env['machine']}); {wall_time:.0f} s in all.",
      "Everything below ran offline: E3 draws its data from the source tutorial's formula, the classifiers use"
      " scikit-learn's bundled data sets (the source tutorials' MNIST, Fashion-MNIST and CIFAR-10 need a download).",
      "",
  ]
  lines += _e3_section(records["e3"])
  lines += _dropout_section(records["dropout"], seeds)
  lines += _e7_section(records["e7"])
  lines += _e6_section(records["e6"])
  lines += _e8_section(records["e8"])
  lines += _e9_section(records["e9"])
  return "\n".join(lines) + "\n"


def _e3_section(record) -> list[str]:
  runs = record["runs"]
  lines = [
      "## E3: weight decay on high-dimensional linear regression (tutorial 004)",
      "",
      f"d = 200, 20 training and 100 test examples, batch 5, 100 epochs, lr 0.003; {len(set(r['seed'] for r in runs))}"
      " seeds (each its own initialization and shuffles). The seed printed one random draw; the norm"
      " without decay is about that of the initial w (a chi variable with 200 degrees of freedom, mean 14.1,"
      " sd 0.7) with the 20-dimensional row space of the data projected out.",
      "",
      "| version | lambda | ‖w‖₂ (mean ± sd) | ‖w‖₂ (first seed) | tutorial 004 | test loss (mean) | train loss (mean) |",
      "|---|---|---|---|---|---|---|",
  ]
  groups: dict = {}
  for r in runs:
    groups.setdefault((r["version"], r["weight_decay"]), []).append(r)
  for (version, lam), rs in groups.items():
    seed_norm = rs[0]["seed_w_norm"]
    lines.append(
        f"| {version} | {lam:g} | {_mean_sd([r['w_norm'] for r in rs])} | {rs[0]['w_norm']:.4f} |"
        f" {f'{seed_norm:.4f}' if seed_norm is not None else '–'} | {np.mean([r['final']['test_loss'] for r in rs]):.4g} |"
        f" {np.mean([r['final']['train_loss'] for r in rs]):.4g} |"
    )
  lines += ["", "Checks: " + "; ".join(f"{k}: {'ok' if v else 'FAILED'}" for k, v in record["checks"].items()), "",
            "![E3 losses](e3/losses.png)", ""]
  return lines


def _dropout_section(record, seeds) -> list[str]:
  groups = record["groups"]
  with_d, without = groups["dropout 0.2/0.5"], groups["no dropout"]
  narrowed = with_d["gap_mean"] < without["gap_mean"]
  verdict = (
      f"Dropout {'narrowed' if narrowed else 'did not narrow'} the train-test accuracy gap:"
      f" {with_d['gap_mean']:.4f} with dropout against {without['gap_mean']:.4f} without"
      f" (mean over {seeds} seeds), and test accuracy went from {without['test_acc_mean']:.4f} to"
      f" {with_d['test_acc_mean']:.4f}."
  )
  lines = [
      "## Dropout against no dropout on the digits (tutorials 001 and 004)",
      "",
      f"E2's MLP (64-256-256-10, N(0, 0.01) init, SGD lr 0.5, batch 256) on scikit-learn's 8x8 digits for"
      f" {record['epochs']} epochs (by default the source tutorial's 2,350 steps), {seeds} seeds per configuration trained together"
      " (vmapped). The source tutorial's own check: train loss < 0.5 and accuracies > 0.7.",
      "",
      "| configuration | test acc (mean ± sd) | train − test acc gap | test loss | tutorial's check passed |",
      "|---|---|---|---|---|",
  ]
  for label, g in groups.items():
    passed = sum(r["final"]["train_loss"] < 0.5 and r["final"]["train_acc"] > 0.7 and r["final"]["test_acc"] > 0.7
                 for r in g["runs"])
    lines.append(f"| {label} | {g['test_acc_mean']:.4f} ± {g['test_acc_sd']:.4f} | {g['gap_mean']:.4f} ±"
                 f" {g['gap_sd']:.4f} | {g['test_loss_mean']:.4f} ± {g['test_loss_sd']:.4f} | {passed}/{len(g['runs'])} |")
  lines += ["", verdict, "", "Per seed (test accuracy): " + "; ".join(
      f"{label}: " + ", ".join(f"{r['final']['test_acc']:.4f}" for r in g["runs"]) for label, g in groups.items()),
            "", "![dropout vs none](dropout/curves.png)", ""]
  return lines


def _e7_section(record) -> list[str]:
  lines = [
      "## E7: explicit L1 and L2 penalties (tutorial 004, end)",
      "",
      "loss + 0.01 · Σ‖θ‖₁ or + 0.01 · Σ‖θ‖₂ (the plain norm, every parameter including biases, as in the seed)"
      f" on E2's MLP with dropout; {record['dataset']['note']}. The seed gives no figures.",
      "",
      "| penalty | train acc | test acc | test loss | Σ‖θ‖₁ | Σ‖θ‖₂ | share of \\|θ\\| < 1e-3 |",
      "|---|---|---|---|---|---|---|",
  ]
  for r in record["runs"]:
    lines.append(f"| {r['name']} | {_acc(r, 'train_acc')} | {_acc(r, 'test_acc')} | {r['final']['test_loss']:.4f} |"
                 f" {r['l1_norm']:.1f} | {r['l2_norm_sum']:.2f} | {r['near_zero_fraction']:.1%} |")
  lines += ["", _e7_verdict(record), "", "![E7](e7/curves.png)", ""]
  return lines


def _e7_verdict(record) -> str:
  runs = {r["name"]: r for r in record["runs"]}
  if "none" not in runs:
    return ""
  base = runs["none"]
  parts = []
  for name in ("l1", "l2"):
    if name in runs:
      r = runs[name]
      parts.append(
          f"{name.upper()}: test accuracy {r['final']['test_acc']:.4f} (none: {base['final']['test_acc']:.4f}),"
          f" Σ‖θ‖₁ {r['l1_norm'] / base['l1_norm']:.0%} of the unpenalized network's"
      )
  return "; ".join(parts) + ". Chance accuracy is 0.10 (ten classes)."


def _e6_section(record) -> list[str]:
  lines = [
      "## E6: tutorial 002's small networks",
      "",
      f"{record['dataset']['note']}. The seed gives no figures; the convnet trains {CONVNET_EPOCHS} epochs here"
      " (`python -m experiments run e6` runs 20).",
      "",
      "| network | train acc | test acc | test loss | epoch path |",
      "|---|---|---|---|---|",
  ]
  for r in record["runs"]:
    lines.append(f"| {r['name']} | {_acc(r, 'train_acc')} | {_acc(r, 'test_acc')} | {r['final']['test_loss']:.4f} |"
                 f" {r['execution']['path']} |")
  lines += ["", "![E6](e6/curves.png)", ""]
  return lines


def _e8_section(record) -> list[str]:
  config = record["config"]
  lines = [
      "## E8: a Vision Transformer regularized as transformers are (beyond the tutorials)",
      "",
      f"{record['dataset']['note']}; {config['patch']}x{config['patch']} patches, {config['depth']} pre-norm"
      f" blocks of width {config['dim']} with {config['heads']} heads, attention dropout"
      f" {config['attention_dropout']}, residual dropout {config['dropout']}, stochastic depth rising to"
      f" {config['drop_path']}, AdamW (lr {config['lr']:g}, decay {config['weight_decay']:g}), batch"
      f" {config['batch_size']}, {VIT_EPOCHS} epochs here (`python -m experiments run e8` runs {E8_DEFAULTS.epochs} epochs of"
      f" {E8_DEFAULTS.depth} blocks). The same model,"
      " built with jaxdrop (key-only attention dropout; `jaxdrop.adamw`, whose default mask leaves biases and norm"
      " scales undecayed) and with Flax's own dropout and `optax.adamw` (every parameter decayed). Step time and"
      " compiled temporary memory are of one train step (batch as above), timed side by side.",
      "",
      "| version | test acc (mean ± sd) | 95% CI | train acc | one step (ms) | compiled temp memory (MiB) |",
      "|---|---|---|---|---|---|",
  ]
  for r in record["runs"]:
    acc = r["summary"]["test_acc"]
    lines.append(f"| {r['name']} | {acc['mean']:.4f} ± {acc['sd']:.4f} | {acc['ci95'][0]:.4f}..{acc['ci95'][1]:.4f} |"
                 f" {r['final']['train_acc']:.4f} | {r['cost']['step_ms']:.1f} | {r['cost']['temp_mib']:.1f} |")
  lines += ["", "![E8](e8/curves.png)", ""]
  return lines


def _e9_section(record) -> list[str]:
  config = record["config"]
  (run,) = record["runs"]
  result = run["uncertainty"]
  lines = [
      "## E9: uncertainty you can see (MC dropout, beyond the tutorials)",
      "",
      f"E2's MLP with dropout {config['dropout1']}/{config['dropout2']} on {record['dataset']['name']},"
      f" {config['epochs']} epochs, {len(run['seeds'])} seeds. Each seed's network predicts the test set"
      f" deterministically (dropout off) and by MC dropout (the mean class probabilities of"
      f" {result['mc_samples']} passes with dropout on, `jaxdrop.mc_dropout`). ECE: expected calibration error over"
      f" {result['bins']} equal confidence bins; entropy: the mean predictive entropy (nats) of the right and of"
      " the wrong predictions. Mean ± sd over the seeds, and the 95 % CI of the ECE.",
      "",
      "| predictor | test acc (mean ± sd) | ECE (mean ± sd) | ECE 95% CI | entropy, right | entropy, wrong |",
      "|---|---|---|---|---|---|",
  ]
  for key, label in (("deterministic", "deterministic"), ("mc_dropout", "MC dropout")):
    s = result["summary"][key]
    ece = s["ece"]
    lines.append(f"| {label} | {s['accuracy']['mean']:.4f} ± {s['accuracy']['sd']:.4f} | {ece['mean']:.4f} ±"
                 f" {ece['sd']:.4f} | {ece['ci95'][0]:.4f}..{ece['ci95'][1]:.4f} | {s['entropy_correct']['mean']:.3f}"
                 f" | {s['entropy_wrong']['mean']:.3f} |")
  lines += ["", "Reliability diagram (accuracy against confidence, the seeds pooled):", "",
            "![E9](e9/reliability.png)", ""]
  return lines

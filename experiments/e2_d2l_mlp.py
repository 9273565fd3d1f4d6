"""E2 (tutorials 001 and 004): d2l's two-hidden-layer MLP with dropout 0.2 / 0.5,
from scratch (the pure ``jaxdrop.dropout`` function) and concise (the linen layer).

In ``python -m experiments reproduce`` its part is the claim of both tutorials:
the same MLP with dropout and without, several seeds each, on the digits
(:func:`compare_dropout`), and whether dropout narrows the train-test gap.

``--r-drop-alpha A`` (R-Drop, Liang et al., 2021: :func:`jaxdrop.r_drop_loss`) trains each version a second
time with ``Task.r_drop_alpha=A`` and compares its test accuracy with the plain run's, with 95 % confidence
intervals over the seeds (:func:`r_drop_comparison`); the comparison of dropout with none takes the same
option (a third group). Off by default: the default run and ``reproduce`` are as they were.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses
import math
import time
from typing import Any

import flax.linen as nn
import numpy as np

import jaxdrop
from experiments import command_line, signals
from experiments.config import Config, option
from experiments.data import load_dataset, resolve_dataset
from experiments.errors import ConfigError
from experiments.files import write_json
from experiments.models import MLP, init_scratch_mlp, scratch_mlp
from experiments.plots import plot_curves
from experiments.records import describe, environment, mean_sd, metric_range, run_entry, seed_summary
from experiments.runner import Emit, Experiment, Part, epochs_for, linen_task, train_run
from jaxdrop import training

VERSIONS = ("scratch", "concise")
# The ``experiment`` of the comparison's record (its folder in a reproduce folder: ``dropout``).
DROPOUT_VS_NONE = "dropout_vs_none"
WITH_DROPOUT = "dropout 0.2/0.5"
GROUPS = {WITH_DROPOUT: (0.2, 0.5), "no dropout": (0.0, 0.0)}
DETERMINISTIC_TRAIN = "train (a pass over the training set, dropout off)"


@dataclasses.dataclass
class E2Config(Config):
  batch_size: int = option(256, "training batch size")
  lr: float = option(0.5, "SGD learning rate")
  dropout1: float = option(0.2, "drop probability after the first hidden layer", rate=True)
  dropout2: float = option(0.5, "drop probability after the second hidden layer", rate=True)
  hidden: int = option(256, "units of each hidden layer")
  init_std: float = option(0.01, "standard deviation of the Normal weight init", nonnegative=True)
  versions: tuple[str, ...] = option(VERSIONS, "which implementations to train", choices=VERSIONS)
  r_drop_alpha: float = option(
      0.0, "R-Drop (Liang et al., 2021): also train each version with the loss of two dropout passes plus this"
      " weight times their symmetric KL, and compare test accuracy with and without over the seeds (0: off)",
      nonnegative=True,
  )


def acceptance(final: dict[str, float]) -> dict[str, bool]:
  """The source tutorial's own check: train loss < 0.5, 0.7 < train acc <= 1, 0.7 < test acc <= 1."""
  return {
      "train_loss < 0.5": final["train_loss"] < 0.5,
      "0.7 < train_acc <= 1": 0.7 < final["train_acc"] <= 1,
      "0.7 < test_acc <= 1": 0.7 < final["test_acc"] <= 1,
  }


def build(version: str, config: E2Config, data):
  """The task and the parameter initializer (``init_key -> params``) of one version."""
  rates = (config.dropout1, config.dropout2)
  if version == "scratch":
    sizes = (data.x_train[0].size, config.hidden, config.hidden, data.num_classes)
    task = training.Task(lambda p, x, train, key: scratch_mlp(p, x, rates, key if train else None), training.cross_entropy)
    return task, lambda key: init_scratch_mlp(key, sizes, config.init_std)
  model = MLP((config.hidden, config.hidden), rates, data.num_classes, kernel_init=nn.initializers.normal(config.init_std))
  return linen_task(model), lambda key: model.init(key, data.x_train[:1], train=False)["params"]


def r_drop_name(name: str, alpha: float) -> str:
  """The name of ``name``'s run with R-Drop: ``"concise, R-Drop α=1"``."""
  return f"{name}, R-Drop α={alpha:g}"


def _test_accs(entry: dict[str, Any]) -> list[float]:
  """Each seed's final test accuracy of a run entry (one seed's, or several seeds' with ``per_seed``)."""
  return [e["final"]["test_acc"] for e in entry.get("per_seed", [entry])]


def r_drop_comparison(without: dict[str, Any], with_r_drop: dict[str, Any], alpha: float) -> dict[str, Any]:
  """Test accuracy without and with R-Drop over the same seeds, and their difference seed by seed.

  Returns:
    ``{"alpha", "seeds", "without", "with", "difference"}``: the last three
    :func:`~experiments.records.seed_summary`'s (mean, sd, 95 % t interval) of the test accuracy, and of
    ``with - without`` per seed (paired: each seed's two runs share initialization, shuffles and the
    first copy's masks' key).
  """
  before, after = _test_accs(without), _test_accs(with_r_drop)
  return {
      "alpha": alpha, "seeds": len(before),
      "without": seed_summary(before, metric_range("test_acc")),
      "with": seed_summary(after, metric_range("test_acc")),
      "difference": seed_summary(np.subtract(after, before).tolist(), (-1.0, 1.0)),
  }


def describe_r_drop(name: str, comparison: dict[str, Any]) -> str:
  """One line: both test accuracies and their difference, with 95 % CIs."""
  def ci(s):
    return f"{s['mean']:.4f} (95% CI {s['ci95'][0]:.4f}..{s['ci95'][1]:.4f})"

  return (f"{name}: test acc {ci(comparison['without'])} without R-Drop, {ci(comparison['with'])} with"
          f" R-Drop α={comparison['alpha']:g}; difference {ci(comparison['difference'])} over"
          f" {comparison['seeds']} seed(s)")


def run(config: E2Config, record, emit, quiet: bool) -> None:
  data = resolve_dataset(config.dataset, "fashion_mnist", config.data_dir, offline="mnist_5k")
  record.set_dataset(data, config.dataset)
  if data.note:
    emit(f"data: {data.note}")
  epochs = epochs_for(config, data, "fashion_mnist", 10, emit)
  for version in config.versions:
    task, init = build(version, config, data)
    entry, _ = train_run(version, task, init, jaxdrop.sgd(config.lr), data, config, record, quiet=quiet, emit=emit,
                         epochs=epochs)
    entry["checks"] = acceptance(entry["final"])
    verdict = "passes" if all(entry["checks"].values()) else "FAILS"
    emit(describe(entry) + f"; {verdict} the source tutorial's check (train loss < 0.5, accuracies > 0.7)")
    record.add_run(entry)
    if config.r_drop_alpha:
      name = r_drop_name(version, config.r_drop_alpha)
      r_task = dataclasses.replace(task, r_drop_alpha=config.r_drop_alpha)
      r_entry, _ = train_run(name, r_task, init, jaxdrop.sgd(config.lr), data, config, record, quiet=quiet,
                             emit=emit, epochs=epochs)
      r_entry["checks"] = acceptance(r_entry["final"])
      emit(describe(r_entry))
      record.add_run(r_entry)
      comparison = r_drop_comparison(entry, r_entry, config.r_drop_alpha)
      record.data.setdefault("r_drop", {})[version] = comparison
      emit(describe_r_drop(version, comparison))
  record.add_figure(plot_curves(
      record.out_dir / "curves.png", record.data["runs"],
      title=f"E2: d2l MLP, dropout {config.dropout1}/{config.dropout2}",
  ))


def _sd(values) -> float:
  values = np.asarray(values, np.float64)
  return float(values.std(ddof=1)) if len(values) > 1 else 0.0


def _with_gap(history: dict[str, list[float]]) -> dict[str, list[float]]:
  return {**history, "gap": (np.asarray(history["train_acc"]) - np.asarray(history["test_acc"])).tolist()}


def compare_dropout(out_dir: Path, seeds: int, emit: Emit, quiet: bool, epochs: int | None = None,
                    r_drop_alpha: float = 0.0) -> dict[str, Any]:
  """E2's MLP on the digits with dropout 0.2/0.5 and without, ``seeds`` runs each (vmapped).

  With ``r_drop_alpha`` (reproduce's ``options={"dropout": {"r_drop_alpha": A}}``) a third group trains the
  dropout network with R-Drop, and the record's ``r_drop`` compares its test accuracy with the dropout
  group's (:func:`r_drop_comparison`).

  The train metrics are those of a deterministic pass over the training set
  (dropout off, ``FitOptions.eval_train``), so that the train-test gap is the
  generalization gap, not dropout's noise during training. ``epochs``
  defaults to the source tutorial's number of SGD steps (see ``epochs_for``).

  Returns:
    The record written to ``out_dir/record.json``: per configuration, each
    seed's run and the mean and standard deviation of the test accuracy, of
    the train-test accuracy gap and of the test loss; the figure
    ``curves.png`` draws accuracies, gap and losses over the epochs with the
    spread over the seeds.
  """
  out_dir.mkdir(parents=True, exist_ok=True)
  started = time.perf_counter()
  data = load_dataset("digits")
  base = E2Config(dataset="digits", epochs=epochs)
  epochs = epochs_for(base, data, "fashion_mnist", 10, emit)
  if not (isinstance(r_drop_alpha, (int, float)) and not isinstance(r_drop_alpha, bool)
          and math.isfinite(r_drop_alpha) and r_drop_alpha >= 0):
    raise ConfigError(f"r_drop_alpha must be a finite number >= 0 (0: no R-Drop group), got {r_drop_alpha!r}.")
  seed_list = list(range(seeds))
  record: dict[str, Any] = {
      "experiment": DROPOUT_VS_NONE, "dataset": data.note, "seeds": seed_list, "epochs": epochs,
      "config": dataclasses.asdict(base), "environment": environment(), "train_metrics": DETERMINISTIC_TRAIN,
      "groups": {},
  }
  groups = {label: (rates, 0.0) for label, rates in GROUPS.items()}
  if r_drop_alpha:
    record["r_drop_alpha"] = r_drop_alpha
    groups[r_drop_name(WITH_DROPOUT, r_drop_alpha)] = (GROUPS[WITH_DROPOUT], r_drop_alpha)
  curves = []
  for label, ((r1, r2), alpha) in groups.items():
    task, init = build("concise", dataclasses.replace(base, dropout1=r1, dropout2=r2), data)
    task = dataclasses.replace(task, r_drop_alpha=alpha) if alpha else task
    results = training.fit_seeds(task, init, jaxdrop.sgd(base.lr), data, seeds=seed_list, epochs=epochs,
                                 batch_size=base.batch_size, quiet=quiet, description=label,
                                 eval_every=max(1, epochs // 40), eval_train=True, stop=signals.requested,
                                 mask_generator=base.mask_generator)
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
    emit(f"{label}: test acc {mean_sd(test_acc)}, train-test gap {mean_sd(gap)}, test loss {mean_sd(test_loss)}"
         f" over {seeds} seeds")
    per_seed = [{"history": _with_gap(r["history"])} for r in runs]
    mean = {k: np.mean([p["history"][k] for p in per_seed], axis=0).tolist() for k in per_seed[0]["history"]}
    curves.append({"name": label, "history": mean, "per_seed": per_seed})
  if r_drop_alpha:
    record["r_drop"] = r_drop_comparison({"per_seed": record["groups"][WITH_DROPOUT]["runs"]},
                                         {"per_seed": record["groups"][r_drop_name(WITH_DROPOUT, r_drop_alpha)]
                                          ["runs"]}, r_drop_alpha)
    emit(describe_r_drop(WITH_DROPOUT, record["r_drop"]))
  plot_curves(out_dir / "curves.png", curves,
              {"accuracy": ("train_acc", "test_acc"), "train accuracy − test accuracy": ("gap",),
               "cross-entropy loss": ("train_loss", "test_loss")},
              title=f"dropout vs none on the digits (E2's MLP), {seeds} seeds", train_label=DETERMINISTIC_TRAIN)
  record["figures"] = ["curves.png"]
  record["wall_time_s"] = round(time.perf_counter() - started, 3)
  write_json(out_dir / "record.json", record)
  return record


def report_section(record: dict[str, Any], seeds: int) -> list[str]:
  """reproduce's section on the comparison of dropout with none (the part's folder: ``dropout``)."""
  groups = record["groups"]
  with_d, without = groups["dropout 0.2/0.5"], groups["no dropout"]
  narrowed = with_d["gap_mean"] < without["gap_mean"]
  verdict = (
      f"Dropout {'narrowed' if narrowed else 'did not narrow'} the train-test accuracy gap:"
      f" {with_d['gap_mean']:.4f} with dropout against {without['gap_mean']:.4f} without"
      f" (mean over {seeds} seeds), and test accuracy went from {without['test_acc_mean']:.4f} to"
      f" {with_d['test_acc_mean']:.4f}."
  )
  deterministic = record.get("train_metrics") == DETERMINISTIC_TRAIN
  train = ("Train accuracy here is that of a pass over the training set with dropout off, after each evaluated"
           " epoch, so the gap is the generalization gap, not the noise dropout adds during training"
           if deterministic else "Train accuracy here is the running mean over the epoch, with dropout on")
  lines = [
      "## Dropout against no dropout on the digits (tutorials 001 and 004)",
      "",
      f"E2's MLP (64-256-256-10, N(0, 0.01) init, SGD lr 0.5, batch 256) on scikit-learn's 8x8 digits for"
      f" {record['epochs']} epochs (by default the source tutorial's 2,350 steps), {seeds} seeds per configuration"
      f" trained together (vmapped). {train}. The source tutorial's own check: train loss < 0.5 and accuracies"
      " > 0.7.",
      "",
      "| configuration | test acc (mean ± sd) | train − test acc gap | test loss | tutorial's check passed |",
      "|---|---|---|---|---|",
  ]
  for label, g in groups.items():
    passed = sum(r["final"]["train_loss"] < 0.5 and r["final"]["train_acc"] > 0.7 and r["final"]["test_acc"] > 0.7
                 for r in g["runs"])
    lines.append(f"| {label} | {g['test_acc_mean']:.4f} ± {g['test_acc_sd']:.4f} | {g['gap_mean']:.4f} ±"
                 f" {g['gap_sd']:.4f} | {g['test_loss_mean']:.4f} ± {g['test_loss_sd']:.4f} | {passed}/{len(g['runs'])} |")
  lines += ["", verdict, *_r_drop_lines(record), "", "Per seed (test accuracy): " + "; ".join(
      f"{label}: " + ", ".join(f"{r['final']['test_acc']:.4f}" for r in g["runs"]) for label, g in groups.items()),
            "", "The figure: train and test accuracy of both networks, the gap between them and the losses, per"
            " evaluated epoch (the mean over the seeds, a band of one sd around it).", "",
            "![dropout vs none: accuracies, gap and losses](dropout/curves.png)", ""]
  return lines


def _r_drop_lines(record: dict[str, Any]) -> list[str]:
  """The report's paragraph on R-Drop's group (none when the comparison ran without it)."""
  comparison = record.get("r_drop")
  if comparison is None:
    return []
  w, r, d = comparison["without"], comparison["with"], comparison["difference"]
  ci = lambda s: f"{s['mean']:.4f} (95 % CI {s['ci95'][0]:.4f} to {s['ci95'][1]:.4f})"  # noqa: E731
  low, high = d["ci95"]
  resolved = ("the interval contains 0: no difference resolved at this number of seeds" if low <= 0 <= high
              else f"the interval excludes 0: R-Drop {'raised' if low > 0 else 'lowered'} test accuracy")
  return ["", f"R-Drop (Liang et al., 2021; α = {comparison['alpha']:g}, the dropout network's two passes of each"
          f" batch in one, `Task.r_drop_alpha`): test accuracy {ci(r)} against {ci(w)} without it; the"
          f" difference, seed by seed, {ci(d)} over {comparison['seeds']} seeds ({resolved})."]


EXPERIMENT = Experiment(
    name="e2",
    title="d2l MLP 784-256-256-10, dropout 0.2/0.5, N(0, 0.01) init, SGD(lr=0.5), batch 256, 10 epochs;"
    " scratch and concise versions",
    source="tutorials 001 and 004 (d2l dropout on Fashion-MNIST)",
    config=E2Config,
    run=run,
    part=Part(report_section, quick={"epochs": 2}, folder="dropout", run=compare_dropout),
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))

"""E3 (tutorial 004): weight decay on high-dimensional linear regression, from scratch
(L2 penalty in the loss) and concise (decay in the optax chain, on the weight only)."""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses
import types
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
from experiments import command_line
from experiments.config import Config, option
from experiments.data import linear_regression_data
from experiments.plots import plot_curves
from experiments.records import mean_sd, run_entry
from experiments.runner import Experiment, Part, norm, train_run
from jaxdrop import training

VERSIONS = ("scratch", "concise")
# The source tutorial's printed ||w||_2 (one random draw each), by version and lambda.
SEED_NORMS = {("scratch", 0.0): 13.111292839050293, ("scratch", 3.0): 0.3369603753089905,
              ("concise", 0.0): 12.565210342407227, ("concise", 3.0): 0.366534024477005}


@dataclasses.dataclass
class E3Config(Config):
  epochs: int = option(100, "passes over the training set")
  batch_size: int = option(5, "training batch size")
  lr: float = option(0.003, "SGD learning rate")
  lambdas: tuple[float, ...] = option((0.0, 3.0), "weight-decay strengths to compare", nonnegative=True)
  num_inputs: int = option(200, "dimension d of x")
  n_train: int = option(20, "training examples")
  n_test: int = option(100, "test examples")
  versions: tuple[str, ...] = option(VERSIONS, "which implementations to train", choices=VERSIONS)
  seeds: int = option(5, "number of seeds (seed, seed+1, ...), trained together: the norms depend on the draw of w")
  dataset: str = option("synthetic", "E3 draws its data from the source tutorial's formula", choices=("synthetic",))


class LinearRegression(nn.Module):
  """``nn.Linear(d, 1)`` with every parameter drawn from ``N(0, 1)`` (``param.data.normal_()``)."""

  @nn.compact
  def __call__(self, x, train: bool):
    del train
    return nn.Dense(1, kernel_init=nn.initializers.normal(1.0), bias_init=nn.initializers.normal(1.0))(x)


def build(version: str, lam: float, config: E3Config, sample):
  """Task, parameter initializer (``init_key -> params``) and optimizer of one (version, lambda) run."""
  d = config.num_inputs
  if version == "scratch":  # w ~ N(0, 1), b = 0; loss (y_hat - y)^2 / 2 + lam * ||w||^2 / 2; plain SGD
    init = lambda key: {"w": jax.random.normal(key, (d, 1)), "b": jnp.zeros((1,))}
    apply = lambda p, x, train, key: x @ p["w"] + p["b"][None]
    penalty = (lambda p: lam * jaxdrop.l2_penalty(p)) if lam else None
    return training.Task(apply, training.half_squared_error, penalty, classification=False), init, optax.sgd(config.lr)
  # concise: nn.MSELoss (no 1/2) and torch.optim.SGD(weight_decay=lam) on the weight only
  model = LinearRegression()
  init = lambda key: model.init(key, sample[:1], train=False)["params"]
  apply = lambda p, x, train, key: model.apply({"params": p}, x, train=train)
  task = training.Task(apply, training.squared_error, classification=False)
  return task, init, jaxdrop.sgd(config.lr, weight_decay=lam)


def weight_of(params):
  return params["w"] if "w" in params else params["Dense_0"]["kernel"]


def run(config: E3Config, record, emit, quiet: bool) -> None:
  data = synthetic_data(config)
  record.data["dataset"] = {"name": "synthetic", "requested": "synthetic", "train_size": config.n_train,
                            "test_size": config.n_test, "note": NOTE}
  seeds = list(range(config.seed, config.seed + config.seeds))
  for version in config.versions:
    for lam in config.lambdas:
      task, init, tx = build(version, lam, config, data.x_train)
      name = f"{version}, lambda={lam:g}"
      _, results = train_run(name, task, init, tx, data, config, record, quiet=quiet, emit=emit, eval_every=5,
                             eval_train=True)
      norms = []
      for seed, result in zip(seeds, results, strict=True):
        entry = run_entry(name, result)
        entry.update(version=version, weight_decay=lam, seed=seed, w_norm=norm(weight_of(result.state.params)),
                     seed_w_norm=SEED_NORMS.get((version, float(lam))))
        norms.append(entry["w_norm"])
        record.add_run(entry)
      seed_norm = SEED_NORMS.get((version, float(lam)))
      beside = f" (tutorial 004: {seed_norm:.4f})" if seed_norm is not None else ""
      emit(f"{name}: ||w||_2 = {np.mean(norms):.4f} +- {np.std(norms, ddof=1) if len(norms) > 1 else 0.0:.4f} over {len(norms)} seeds{beside};"
           f" seed {config.seed}: {norms[0]:.4f}")
  checks = must_be_true(record.data["runs"])
  record.data["checks"] = checks
  for check, ok in checks.items():
    emit(f"check {'ok  ' if ok else 'FAIL'} {check}")
  record.add_figure(plot_curves(
      record.out_dir / "losses.png", _by_run(record.data["runs"]), {LOSS_LABEL: ("train_loss", "test_loss")},
      log=(LOSS_LABEL,), train_label="train (a pass over the training set)",
      title=f"E3: weight decay on linear regression (d={config.num_inputs}, n={config.n_train}),"
      f" {config.seeds} seed(s)\nloss: (ŷ−y)² concise, ½(ŷ−y)² scratch",
  ))


LOSS_LABEL = "squared-error loss"


def _by_run(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
  """The record's entries (one per run and seed) as one curve per run: the mean over its seeds, and each seed."""
  groups: dict[str, list[dict[str, Any]]] = {}
  for r in runs:
    groups.setdefault(r["name"], []).append(r)
  return [{"name": name, "per_seed": rs if len(rs) > 1 else [],
           "history": {k: np.mean([r["history"][k] for r in rs], axis=0).tolist() for k in rs[0]["history"]}}
          for name, rs in groups.items()]


NOTE = ("y = 0.05 + sum_i 0.01 x_i + eps, x ~ N(0, 1), eps ~ N(0, 0.01^2), drawn once from the first seed;"
        " each seed has its own initialization and shuffles")


def synthetic_data(config: E3Config):
  """The run's training and test sets, drawn from the source tutorial's formula with the run's data key."""
  key = training.run_keys(config.seed)["data"]
  x_train, y_train = linear_regression_data(jax.random.fold_in(key, 0), config.n_train, config.num_inputs)
  x_test, y_test = linear_regression_data(jax.random.fold_in(key, 1), config.n_test, config.num_inputs)
  return types.SimpleNamespace(name="synthetic", x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)


def must_be_true(runs) -> dict[str, bool]:
  """The acceptance figures, on the mean over seeds: ||w|| in [11, 15] without decay and
  [0.2, 0.5] with lambda=3, and the mean test loss with lambda=3 at least 10x lower."""
  groups: dict = {}
  for r in runs:
    groups.setdefault((r["version"], r["weight_decay"]), []).append(r)
  mean = lambda rs, f: float(np.mean([f(r) for r in rs]))
  checks = {}
  for version in VERSIONS:
    free, decayed = groups.get((version, 0.0)), groups.get((version, 3.0))
    if not free or not decayed:
      continue
    checks[f"{version}: 11 <= mean ||w|| <= 15 at lambda=0"] = 11 <= mean(free, lambda r: r["w_norm"]) <= 15
    checks[f"{version}: 0.2 <= mean ||w|| <= 0.5 at lambda=3"] = 0.2 <= mean(decayed, lambda r: r["w_norm"]) <= 0.5
    test_loss = lambda r: r["final"]["test_loss"]
    checks[f"{version}: mean test loss 10x lower at lambda=3"] = 10 * mean(decayed, test_loss) <= mean(free, test_loss)
  return checks


def report_section(record: dict[str, Any], seeds: int) -> list[str]:
  """reproduce's section on E3: the norms beside the source tutorial's, the losses, the checks."""
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
        f"| {version} | {lam:g} | {mean_sd([r['w_norm'] for r in rs])} | {rs[0]['w_norm']:.4f} |"
        f" {f'{seed_norm:.4f}' if seed_norm is not None else '–'} | {np.mean([r['final']['test_loss'] for r in rs]):.4g} |"
        f" {np.mean([r['final']['train_loss'] for r in rs]):.4g} |"
    )
  free = [np.mean([r["final"]["test_loss"] for r in groups[(v, 0.0)]]) for v in VERSIONS if (v, 0.0) in groups]
  ratio = f" (here {free[1] / free[0]:.2f} times)" if len(free) == 2 else ""
  lines += [
      "",
      "The two versions' losses are not on one scale: scratch trains on (and reports) d2l's half squared error"
      " ½(ŷ−y)² (`training.half_squared_error`), concise on PyTorch's `nn.MSELoss`, (ŷ−y)² without the ½"
      f" (`training.squared_error`), so without decay concise's test loss is twice scratch's for the same fit{ratio}."
      " With decay the gap is wider: both add λw to the gradient, against a data gradient twice as large in"
      " concise, which is therefore scratch at λ/2 (and twice the learning rate): less shrunk, as its larger"
      " ‖w‖₂ shows.",
      "",
      "Checks: " + "; ".join(f"{k}: {'ok' if v else 'FAILED'}" for k, v in record["checks"].items()),
      "",
      "The figure: train and test loss every 5 epochs (the mean over the seeds, a band of one sd), on a log"
      " scale; without decay the train loss falls towards 0 while the test loss stays high (over-fitting).",
      "",
      "![E3: train and test losses](e3/losses.png)",
      "",
  ]
  return lines


EXPERIMENT = Experiment(
    name="e3",
    title="weight decay on linear regression (d=200, n_train=20, batch 5, 100 epochs, lr 0.003), lambda 0 vs 3;"
    " scratch (L2 in the loss) and concise (optax decay on the weight)",
    source="tutorial 004 (d2l weight decay)",
    config=E3Config,
    run=run,
    part=Part(report_section, options=lambda seeds: {"seeds": seeds}, quick={"epochs": 10}),
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))

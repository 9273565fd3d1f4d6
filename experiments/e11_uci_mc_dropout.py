"""E11: MC dropout on UCI Boston Housing against Gal & Ghahramani (2016), Table 1.

The protocol of the paper's code (``yaringal/DropoutUncertaintyExps``, the 2018
grid-search version of ``experiment.py`` and ``net/net.py``), on ``mlxtend``'s
copy of the table:

* 20 random 90/10 train/test splits (455/51 rows). The paper's split files are
  not available offline: ours are drawn by NumPy (``default_rng(SPLIT_SEED)``)
  and fixed by that seed, so the numbers compare with the paper's in
  distribution, not split by split.
* Each training set's first 80 % trains and its last 20 % validates every
  point of the grid of drop rates x model precisions ``tau`` (the code's
  ``dropout_rates.txt`` and ``tau_values.txt``); the point of the highest
  validation log-likelihood is that split's. The whole grid is then trained
  again on the whole training set and the chosen point's network is tested.
* Inputs and targets are standardized on the part that trains. The network:
  dropout on the 13 inputs, 50 ReLU units, dropout, one linear output (Keras'
  Glorot-uniform kernels, zero biases); the mean squared error plus the weight
  decay ``l**2 (1 - rate) / (2 N tau)`` on both kernels (``l = 1e-2``, ``N`` the
  rows that train); Adam (learning rate 1e-3), batches of 128; 400 epochs for
  Table 1's row (the code of the paper's time trained ``10 * n_epochs``, its
  ``n_epochs.txt`` holding 40) and 4,000 for its 10x-epochs variant.
* Prediction: MC dropout with ``T = 10,000`` passes. RMSE of their mean, and
  the test log-likelihood: the log-mean-exp over the passes of the Gaussian
  density of precision ``tau`` (on the targets' own scale), averaged over the
  test rows. Reported as mean +- standard error over the splits.
* Concrete dropout (Gal, Hron & Kendall, 2017) on the same splits: the same
  network with a learned drop rate for each of its two dropout layers (no rate
  grid), trained on half the squared error plus
  ``jaxdrop.concrete_dropout_regularizer``. Its regularizer acts on the
  standardized targets, so its precision is the paper's ``tau`` grid expressed
  on that scale (times the table's target variance, about 84); the
  log-likelihood converts it back with each split's own variance. (The MC
  dropout rows keep the paper's code as it is, which puts the targets' own
  ``tau`` into the decay on standardized targets.) ``tau`` is chosen on the
  validation part as above.

Each phase (validation, test) of each model and epoch count trains the whole
grid over all the splits in one ``jaxdrop.training.fit_sweep``: the splits'
standardized copies are stacked, and each split indexes its own rows.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):  # run as a script: import the experiments package from the repository's root
  sys.path[0] = str(Path(__file__).resolve().parents[1])

import dataclasses
import math
import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

import jaxdrop
from experiments import command_line
from experiments.config import Config, option
from experiments.data import boston_housing_table, load_dataset
from experiments.errors import ConfigError
from experiments.plots import plot_estimates
from experiments.records import reduced_options
from experiments.runner import Experiment, Part
from jaxdrop import training

SPLIT_SEED = 2016  # the splits' NumPy seed, whatever --seed is (--seed decides initializations, shuffles, masks)
TEST_FRACTION = 0.1
TRAIN_FRACTION = 0.8  # of each training set: the rest validates the grid (the code's num_training_examples)
MODELS = ("MC dropout", "concrete dropout")
# Gal & Ghahramani (2016), Table 1's Boston Housing row and its 10x-epochs variant (mean +- standard error over
# the 20 splits), and the paper's repository's 2018 re-run with the grid search this experiment follows.
PUBLISHED = {
    1: {"source": "Gal & Ghahramani (2016), Table 1", "rmse": (2.97, 0.19), "ll": (-2.46, 0.06)},
    10: {"source": "Gal & Ghahramani (2016), 10x epochs", "rmse": (2.80, 0.19), "ll": (-2.39, 0.05)},
}
GRID_SEARCH_RERUN = {"source": "the paper's repository, 2018 grid search, 10x epochs", "rmse": (2.90, 0.18),
                     "ll": (-2.40, 0.04)}
# In reproduce (its 4-minute budget): 4 of the 20 splits, Table 1's 400 epochs only, 500 MC passes and no
# concrete dropout; `python -m experiments run e11` runs the whole protocol (see the section).
SUITE = {"splits": 4, "multipliers": (1,), "mc_samples": 500, "concrete": False}


@dataclasses.dataclass
class E11Config(Config):
  epochs: int = option(400, "training epochs of Table 1's row (the paper's code: n_epochs.txt's 40 times the 10"
                       " its experiment.py multiplies by); --multipliers scales them")
  multipliers: tuple[int, ...] = option((1, 10), "epoch multipliers: 1 is Table 1's row, 10 its 10x-epochs variant")
  batch_size: int = option(128, "training batch size (the paper's code)")
  lr: float = option(1e-3, "Adam's learning rate (Keras' default, as in the paper's code)")
  splits: int = option(20, "random 90/10 train/test splits (fixed by SPLIT_SEED)")
  hidden: int = option(50, "ReLU units of the one hidden layer")
  rates: tuple[float, ...] = option((0.005, 0.01, 0.05, 0.1), "drop rates of the grid (the code's"
                                    " dropout_rates.txt)", rate=True)
  taus: tuple[float, ...] = option((0.1, 0.15, 0.2), "model precisions tau of the grid (the code's"
                                   " tau_values.txt)", nonnegative=True)
  length_scale: float = option(1e-2, "the prior length-scale l of the weight decay l**2 (1 - rate) / (2 N tau)",
                               nonnegative=True)
  mc_samples: int = option(10_000, "stochastic passes of MC dropout (the paper's T)")
  concrete: bool = option(True, "also train concrete dropout (learned rates; tau chosen on validation)")

  def validate(self) -> None:
    super().validate()
    for name, value in (("checkpoint_every", self.checkpoint_every), ("devices", self.devices - 1),
                        ("seeds", self.seeds - 1)):
      if value:
        raise ConfigError(f"--{name.replace('_', '-')} is not supported by e11 (each phase trains every split"
                          " once, in one compiled fit_sweep, and the spread is over the splits); leave it at its"
                          " default.")
    if self.resume or self.batch_invariant or self.path != "auto":
      raise ConfigError("--resume, --batch-invariant and --path are not supported by e11 (each phase trains in"
                        " one compiled fit_sweep); leave them at their defaults.")
    if self.dataset not in ("auto", "boston_housing"):
      raise ConfigError(f"--dataset {self.dataset}: e11 runs on UCI Boston Housing (boston_housing) only; leave"
                        " --dataset at auto.")
    if not self.multipliers or any(isinstance(m, bool) or not isinstance(m, int) or m < 1
                                   for m in self.multipliers):
      raise ConfigError(f"--multipliers must be positive integers, got {self.multipliers!r}.")
    if not 2 <= self.splits <= 100:
      raise ConfigError(f"--splits must be an integer in 2..100 (the standard error needs two), got"
                        f" {self.splits!r}.")
    for name, values in (("rates", self.rates), ("taus", self.taus)):
      if not values or len(set(values)) != len(values):
        raise ConfigError(f"--{name} must be one or more distinct values, got {values!r}.")
    if any(not 0 < r < 1 for r in self.rates):
      raise ConfigError(f"--rates must lie in (0, 1) (MC dropout needs dropout), got {self.rates!r}.")
    if any(t <= 0 for t in self.taus) or self.length_scale <= 0:
      raise ConfigError(f"--taus and --length-scale must be > 0, got {self.taus!r} and {self.length_scale!r}.")


def train_test_splits(n: int, count: int, seed: int = SPLIT_SEED) -> list[tuple[np.ndarray, np.ndarray]]:
  """``count`` random train/test splits of ``n`` rows: the first ``round(0.9 n)`` of a permutation train.

  Example:
    >>> [(len(tr), len(te)) for tr, te in train_test_splits(506, 2)]
    [(455, 51), (455, 51)]
  """
  rng = np.random.default_rng(seed)
  n_train = int(round(n * (1 - TEST_FRACTION)))
  return [(p[:n_train], p[n_train:]) for p in (rng.permutation(n) for _ in range(count))]


@dataclasses.dataclass(frozen=True)
class Phase:
  """One phase's data: every split's standardized copy stacked, and what MC prediction needs."""

  data: types.SimpleNamespace  # x_train, y_train (standardized targets), x_test, y_test: all splits stacked
  splits: tuple[np.ndarray, np.ndarray]  # each split's rows of the stacked arrays: (S, n_train), (S, n_eval)
  targets: np.ndarray  # (S, n_eval): the evaluated rows' targets on their own scale
  y_mean: np.ndarray  # (S,): each split's training targets' mean and standard deviation
  y_std: np.ndarray

  @property
  def n_train(self) -> int:
    return self.splits[0].shape[1]


def phase(features: np.ndarray, target: np.ndarray, rows: list[tuple[np.ndarray, np.ndarray]]) -> Phase:
  """Each split's (training rows, evaluated rows) standardized on its training rows, as the paper's ``net``:
  inputs by their mean and standard deviation (1 where it is 0), targets by theirs."""
  parts = {k: [] for k in ("x_train", "y_train", "x_test", "y_test", "targets", "y_mean", "y_std")}
  for train, evaluated in rows:
    x, y = features[train], target[train]
    mean, std = x.mean(0), x.std(0)
    std[std == 0] = 1
    y_mean, y_std = y.mean(), y.std()
    parts["x_train"].append((x - mean) / std)
    parts["y_train"].append((y - y_mean) / y_std)
    parts["x_test"].append((features[evaluated] - mean) / std)
    parts["y_test"].append((target[evaluated] - y_mean) / y_std)
    parts["targets"].append(target[evaluated])
    parts["y_mean"].append(y_mean)
    parts["y_std"].append(y_std)
  s, n_train, n_eval = len(rows), len(rows[0][0]), len(rows[0][1])
  stacked = {k: np.concatenate(parts[k]).astype(np.float32) for k in ("x_train", "y_train", "x_test", "y_test")}
  data = types.SimpleNamespace(x_train=stacked["x_train"], y_train=stacked["y_train"][:, None],
                               x_test=stacked["x_test"], y_test=stacked["y_test"][:, None])
  splits = (np.arange(s * n_train).reshape(s, n_train), np.arange(s * n_eval).reshape(s, n_eval))
  return Phase(data, splits, np.stack(parts["targets"]), np.asarray(parts["y_mean"]), np.asarray(parts["y_std"]))


def init_mlp(hidden: int, concrete: bool = False) -> Callable[[jax.Array], dict[str, jax.Array]]:
  """``key -> params`` of 13-``hidden``-1 with Keras' Dense initialization; concrete dropout's two rate logits
  start at the rate 0.1 (its reference code's ``init_min = init_max = 0.1``)."""
  def init(key):
    k1, k2 = jax.random.split(key)
    glorot = jax.nn.initializers.glorot_uniform()
    params = {"W1": glorot(k1, (13, hidden)), "b1": jnp.zeros(hidden), "W2": glorot(k2, (hidden, 1)),
              "b2": jnp.zeros(1)}
    if concrete:
      params.update(logit1=jnp.float32(math.log(0.1 / 0.9)), logit2=jnp.float32(math.log(0.1 / 0.9)))
    return params

  return init


def mc_apply(params, x, key, rate):
  """The MC-dropout network; ``key`` ``None``: deterministic (dropout off)."""
  drop = (lambda i, a: a) if key is None else (lambda i, a: jaxdrop.dropout(jax.random.fold_in(key, i), a, rate))
  hidden = jax.nn.relu(drop(0, x) @ params["W1"] + params["b1"][None])
  return drop(1, hidden) @ params["W2"] + params["b2"][None]


def concrete_rates(params) -> tuple[jax.Array, jax.Array]:
  """The learned drop rates of the inputs and of the hidden layer."""
  return jax.nn.sigmoid(params["logit1"]), jax.nn.sigmoid(params["logit2"])


def concrete_apply(params, x, key, rate=None):
  """The concrete-dropout network; ``key`` ``None``: deterministic (dropout off)."""
  p1, p2 = concrete_rates(params)
  drop = ((lambda i, a, p: a) if key is None
          else (lambda i, a, p: jaxdrop.concrete_dropout(jax.random.fold_in(key, i), a, p)))
  hidden = jax.nn.relu(drop(0, x, p1) @ params["W1"] + params["b1"][None])
  return drop(1, hidden, p2) @ params["W2"] + params["b2"][None]


def mc_task_for(n_train: int, length_scale: float):
  """``hparams -> Task`` of MC dropout: the paper's mean squared error and weight decay."""
  def task_for(h):
    decay = length_scale**2 * (1 - h["rate"]) / (2 * n_train * h["tau"])
    return training.Task(lambda p, x, train, key: mc_apply(p, x, key if train else None, h["rate"]),
                         training.squared_error, penalty=lambda p: decay * (jnp.sum(p["W1"]**2) + jnp.sum(p["W2"]**2)),
                         classification=False)

  return task_for


def concrete_task_for(n_train: int, length_scale: float):
  """``hparams -> Task`` of concrete dropout: half the squared error plus each layer's regularizer at the
  precision ``hparams["tau"]`` of the standardized targets (its ``1 / tau`` factored out: it is traced)."""
  def penalty(p, tau):
    p1, p2 = concrete_rates(p)
    reg = lambda w, rate: jaxdrop.concrete_dropout_regularizer(w, rate, length_scale=length_scale,  # noqa: E731
                                                               data_size=n_train)
    return (reg(p["W1"], p1) + reg(p["W2"], p2)) / tau

  def task_for(h):
    return training.Task(lambda p, x, train, key: concrete_apply(p, x, key if train else None),
                         training.half_squared_error, penalty=lambda p: penalty(p, h["tau"]), classification=False)

  return task_for


def mc_predict(apply: Callable, samples: int):
  """The jitted ``(params, x, targets, y_mean, y_std, tau, rate, key) -> metrics`` of a stack of runs (one
  ``lax.map`` step per run, its ``samples`` passes vmapped): RMSE of the deterministic prediction and of the
  MC mean, and the test log-likelihood, on the targets' own scale."""
  def one(run):
    params, x, y, y_mean, y_std, tau, rate, key = run
    passes = jax.vmap(lambda k: apply(params, x, k, rate)[:, 0])(jax.random.split(key, samples))
    passes = passes * y_std + y_mean
    deterministic = apply(params, x, None, rate)[:, 0] * y_std + y_mean
    ll = (jax.nn.logsumexp(-0.5 * tau * (y[None] - passes) ** 2, axis=0) - math.log(samples)
          - 0.5 * math.log(2 * math.pi) + 0.5 * jnp.log(tau))
    rmse = lambda pred: jnp.sqrt(jnp.mean((y - pred) ** 2))  # noqa: E731
    return {"rmse_deterministic": rmse(deterministic), "rmse": rmse(passes.mean(0)), "ll": ll.mean()}

  return jax.jit(lambda *runs: jax.lax.map(one, runs))


def _stack(trees):
  return jax.tree.map(lambda *leaves: np.stack(leaves), *trees)


def _evaluate(predict, results, chosen, ph: Phase, hparams: dict[str, np.ndarray], key,
              standardized_tau: bool = False) -> dict[str, np.ndarray]:
  """MC metrics of the runs ``chosen`` (indices into ``results``, points outermost, splits fastest); a
  ``standardized_tau`` is the precision of standardized targets, divided by each split's target variance."""
  s = np.asarray(chosen) % len(ph.y_mean)
  points = np.asarray(chosen) // len(ph.y_mean)
  x = ph.data.x_test[ph.splits[1]]  # (S, n_eval, 13)
  tau = hparams["tau"][points] / (ph.y_std[s] ** 2 if standardized_tau else 1)
  runs = (_stack([results[r].params for r in chosen]), x[s], ph.targets[s].astype(np.float32),
          ph.y_mean[s].astype(np.float32), ph.y_std[s].astype(np.float32),
          tau.astype(np.float32), hparams.get("rate", np.zeros(len(points)))[points]
          .astype(np.float32), jax.random.split(key, len(results))[np.asarray(chosen)])  # a key per run
  return jax.tree.map(np.asarray, predict(*runs))


def run(config: E11Config, record, emit, quiet: bool) -> None:
  data = load_dataset("boston_housing")
  record.set_dataset(data, "boston_housing")
  features, target = boston_housing_table()
  rows = train_test_splits(len(target), config.splits)
  cut = int(TRAIN_FRACTION * len(rows[0][0]))
  validation = phase(features, target, [(tr[:cut], tr[cut:]) for tr, _ in rows])
  test = phase(features, target, rows)
  emit(f"data: {data.note}; {config.splits} random 90/10 splits (NumPy seed {SPLIT_SEED}), each training set's"
       f" first {cut} rows train the grid and its last {len(rows[0][0]) - cut} validate it")
  models = {"MC dropout": (training.grid(rate=config.rates, tau=config.taus), mc_task_for, init_mlp(config.hidden),
                           mc_apply)}
  if config.concrete:  # its precision on the standardized targets' scale (the module's docstring)
    standardized = [t * float(target.var()) for t in config.taus]
    models["concrete dropout"] = (training.grid(tau=standardized), concrete_task_for,
                                  init_mlp(config.hidden, concrete=True), concrete_apply)
  predictors = {name: mc_predict(m[3], config.mc_samples) for name, m in models.items()}
  table = []
  for multiplier in config.multipliers:
    epochs = config.epochs * multiplier
    options = training.FitOptions(epochs=epochs, batch_size=config.batch_size, eval_every=epochs, quiet=True,
                                  mask_generator=config.mask_generator)
    for name, (hparams, task_for, init, _) in models.items():
      row = _model_row(config, record, name, epochs, options, hparams, task_for, init, predictors[name],
                       validation, test)
      table.append(row)
      emit(f"{name}, {epochs} epochs: test RMSE {row['rmse']['mean']:.2f} +- {row['rmse']['se']:.2f}, test LL"
           f" {row['ll']['mean']:.2f} +- {row['ll']['se']:.2f} (standard errors over {config.splits} splits)"
           + (f"; published {_published(multiplier)}" if name == "MC dropout" and multiplier in PUBLISHED
              else ""))
  record.data["table"] = table
  record.data["published"] = {"by_multiplier": {str(k): v for k, v in PUBLISHED.items()},
                              "grid_search_rerun": GRID_SEARCH_RERUN}
  record.data["protocol"] = {"split_seed": SPLIT_SEED, "train_rows": int(len(rows[0][0])),
                             "test_rows": int(len(rows[0][1])), "validation_train_rows": cut}
  record.add_figure(plot_estimates(record.out_dir / "published.png", _figure_rows(table),
                                   title=f"E11: Boston Housing, {config.splits} splits, mean ± standard error"))


def _published(multiplier: int) -> str:
  p = PUBLISHED[multiplier]
  return f"RMSE {p['rmse'][0]:.2f} +- {p['rmse'][1]:.2f}, LL {p['ll'][0]:.2f} +- {p['ll'][1]:.2f}"


def _model_row(config, record, name, epochs, options, hparams, task_for, init, predict, validation, test):
  """One model at one epoch count: the grid on every split's validation part, the choice, and the test."""
  mc_key = jax.random.fold_in(jax.random.key(config.seed), 11)  # the MC passes' own stream
  tx_for = lambda h: optax.adam(config.lr, eps=1e-7)  # noqa: E731  Keras' Adam epsilon
  points, s = len(next(iter(hparams.values()))), config.splits
  standardized = name == "concrete dropout"  # its tau is the standardized targets' precision
  found = {}
  for label, ph in (("validation", validation), ("test", test)):
    results = training.fit_sweep(task_for(ph.n_train, config.length_scale), init, tx_for, ph.data, options,
                                 hparams=hparams, seeds=[config.seed], splits=ph.splits)
    diverged = [r.config for r in results if r.diverged_at is not None]
    record.add_run(_entry(f"{name}, {epochs} epochs, {label}: {points} points x {s} splits", results,
                          epochs * math.ceil(ph.n_train / config.batch_size), config.seed))
    if label == "validation":
      metrics = _evaluate(predict, results, list(range(points * s)), ph, hparams, jax.random.fold_in(mc_key, epochs),
                          standardized)
      ll = metrics["ll"].reshape(points, s)
      ll = np.where(np.isfinite(ll), ll, -np.inf)
      best = np.argmax(ll, axis=0)  # the first of the best, as the code's strict ">"
      found["validation_ll"] = ll.tolist()
    else:
      chosen = [int(best[i]) * s + i for i in range(s)]
      metrics = _evaluate(predict, results, chosen, ph, hparams, jax.random.fold_in(mc_key, 10**6 + epochs),
                          standardized)
      if name == "concrete dropout":
        rates = np.asarray([[float(v) for v in concrete_rates(results[r].params)] for r in chosen])
        found["learned_rates"] = {"inputs": _mean_se(rates[:, 0]), "hidden": _mean_se(rates[:, 1])}
    found.setdefault("diverged", []).extend({**c, "phase": label} for c in diverged)
  chosen_points = [{k: float(v[b]) for k, v in hparams.items()} for b in best]
  return {"model": name, "epochs": epochs, "multiplier": epochs // config.epochs,
          "rmse": _mean_se(metrics["rmse"]), "ll": _mean_se(metrics["ll"]),
          "rmse_deterministic": _mean_se(metrics["rmse_deterministic"]),
          "per_split": {"rmse": metrics["rmse"].tolist(), "ll": metrics["ll"].tolist(), "chosen": chosen_points},
          "grid": {k: v.tolist() for k, v in hparams.items()},
          "tau_scale": "standardized targets" if standardized else "targets (as the paper's code)", **found}


def _mean_se(values) -> dict[str, float]:
  """Mean and standard error (sample sd / sqrt(n)), as the paper's tables give them."""
  values = np.asarray(values, np.float64)
  return {"mean": float(values.mean()), "se": float(values.std(ddof=1) / math.sqrt(len(values))),
          "n": int(len(values))}


def _entry(name: str, results: list[training.SweepResult], steps: int, seed: int) -> dict[str, Any]:
  """One phase's record entry: the mean history over its runs and the hash of all their parameters."""
  history = {k: np.mean([r.history[k] for r in results], axis=0).tolist() for k in results[0].history}
  return {"name": name, "history": history, "final": {k: v[-1] for k, v in history.items() if k != "epoch"},
          "param_sha256": training.param_sha256([r.params for r in results]), "steps": steps, "seed": seed,
          "runs": len(results), "execution": {"path": "fit_sweep", "reason": "every point and split in one program"}}


def _figure_rows(table) -> dict[str, dict[str, Any]]:
  """The figure's rows: each of ours, and the published one beside each MC dropout row that has one."""
  rows = {}
  for row in table:
    rows[f"ours, {row['model']}, {row['epochs']} epochs"] = {"rmse": row["rmse"], "ll": row["ll"], "ours": True}
    if row["model"] == "MC dropout" and row["multiplier"] in PUBLISHED:
      p = PUBLISHED[row["multiplier"]]
      rows[f"published, {row['epochs']} epochs"] = {k: {"mean": p[k][0], "se": p[k][1]} for k in ("rmse", "ll")}
  return rows


def report_section(record: dict[str, Any], seeds: int) -> list[str]:
  """reproduce's section on E11: our rows beside the published ones, and the figure."""
  config, protocol = record["config"], record["protocol"]
  reduced = reduced_options(config, E11Config(), SUITE)
  lines = [
      "## E11: MC dropout on UCI Boston Housing, beside Gal & Ghahramani (2016)",
      "",
      f"The paper's code's protocol (`yaringal/DropoutUncertaintyExps`, grid search): {config['splits']} random"
      f" 90/10 splits ({protocol['train_rows']}/{protocol['test_rows']} rows, drawn by NumPy seed"
      f" {protocol['split_seed']}: the paper's split files are not available offline, so ours differ); for each,"
      f" the grid of rates {config['rates']} x tau {config['taus']} trains on the first"
      f" {protocol['validation_train_rows']} training rows and the best validation log-likelihood picks the point;"
      f" the network 13-{config['hidden']}-1 with dropout on inputs and hidden units, Adam, batch"
      f" {config['batch_size']}, weight decay l²(1 − p)/(2Nτ) with l = {config['length_scale']}; MC dropout"
      f" with T = {config['mc_samples']:,} passes. Mean ± standard error over the splits."
      + (" Concrete dropout learns its two rates (τ alone is chosen, on the standardized targets' scale: the"
         " paper's grid times the table's target variance)." if config["concrete"] else "")
      + (f" Reduced to stay short: {', '.join(reduced)}; `python -m experiments run e11` runs the paper's"
         " protocol." if reduced else ""),
      "",
      "| model | epochs | test RMSE | test LL | RMSE, dropout off | published RMSE | published LL |",
      "|---|---|---|---|---|---|---|",
  ]
  for row in record["table"]:
    published = PUBLISHED.get(row["multiplier"]) if row["model"] == "MC dropout" else None
    cells = (f"{published['rmse'][0]:.2f} ± {published['rmse'][1]:.2f} | {published['ll'][0]:.2f} ±"
             f" {published['ll'][1]:.2f}" if published else "– | –")
    lines.append(f"| {row['model']} | {row['epochs']} | {row['rmse']['mean']:.2f} ± {row['rmse']['se']:.2f} |"
                 f" {row['ll']['mean']:.2f} ± {row['ll']['se']:.2f} | {row['rmse_deterministic']['mean']:.2f} |"
                 f" {cells} |")
  g = GRID_SEARCH_RERUN
  lines += ["", f"The repository's own grid-search re-run (2018, 400 epochs): RMSE {g['rmse'][0]:.2f} ±"
            f" {g['rmse'][1]:.2f}, LL {g['ll'][0]:.2f} ± {g['ll'][1]:.2f}. {record['dataset']['note']}.", "",
            "![E11: ours beside the published rows](e11/published.png)", ""]
  return lines


EXPERIMENT = Experiment(
    name="e11",
    title="MC dropout and concrete dropout on UCI Boston Housing (20 splits, grid search of rate x tau), test"
    " RMSE and log-likelihood beside the published row",
    source="beyond the tutorials: Gal & Ghahramani (2016), Table 1; Gal, Hron & Kendall (2017)",
    config=E11Config,
    run=run,
    part=Part(report_section, options=lambda seeds: dict(SUITE),
              quick={"splits": 2, "epochs": 2, "multipliers": (1,), "rates": (0.1,), "taus": (0.1,), "mc_samples": 8,
                     "concrete": False, "hidden": 8}),
)


if __name__ == "__main__":
  sys.exit(command_line.main(EXPERIMENT))

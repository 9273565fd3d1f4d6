"""What a run leaves behind: ``record.json`` written atomically, and the facts it holds (the environment,
the code, each run's history, hash and summary over seeds)."""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import math
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import numpy as np

from experiments.config import shown
from experiments.files import write_json
from jaxdrop.training import FitResult, param_sha256

if TYPE_CHECKING:
  from experiments.config import Config
  from experiments.data import Dataset

__all__ = ["PINNED", "RunRecord", "code_fingerprint", "describe", "environment", "environment_differences",
           "mean_sd", "metric_range", "reduced_options", "run_entry", "seed_summary", "seeds_entry"]


# The facts of ``environment()`` that decide a run's bits: --resume and replay refuse a change in one of them.
# The code's git commit is recorded, not pinned (see code_fingerprint): only the sources' hash decides.
PINNED = ("jax", "jaxlib", "flax", "optax", "jaxdrop", "mask_generator", "mask_generator_7", "prng_impl",
          "threefry_partitionable", "xla_flags", "backend", "device_kind", "device_count", "source_sha256")

# What ``source_sha256`` covers: the library and the experiments, the code that defines a run.
SOURCES = "jaxdrop/**/*.py and experiments/*.py"
GIT_TIMEOUT_S = 3.0


def _source_roots() -> tuple[Path, Path]:
  """The folders of the library and of the experiments this process imported."""
  import experiments
  import jaxdrop

  return Path(jaxdrop.__file__).parent, Path(experiments.__file__).parent


def _sources_sha256(library: Path, scripts: Path) -> str | None:
  """The sha256 of ``library/**/*.py`` and ``scripts/*.py``, as ``jaxdrop/...`` and ``experiments/...``."""
  files = [(f"jaxdrop/{p.relative_to(library).as_posix()}", p) for p in library.rglob("*.py")]
  files += [(f"experiments/{p.name}", p) for p in scripts.glob("*.py")]
  digest = hashlib.sha256()
  try:
    for name, path in sorted(files):
      data = path.read_bytes()
      digest.update(f"{name}\0{len(data)}\0".encode())  # the name and length: no two trees hash alike
      digest.update(data)
  except OSError:  # sources that cannot be read (a zipped install): nothing to fingerprint
    return None
  return digest.hexdigest()


def _git(root: Path, *args: str) -> str | None:
  """``git -C root ARGS``'s output; ``None`` without git, outside a repository, on an error or a timeout."""
  try:
    done = subprocess.run(["git", "-C", str(root), *args], check=False, capture_output=True, text=True,
                          timeout=GIT_TIMEOUT_S, env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},
                          stdin=subprocess.DEVNULL)
  except (OSError, subprocess.SubprocessError):
    return None
  return done.stdout if done.returncode == 0 else None


@functools.cache
def _code_fingerprint() -> tuple[tuple[str, Any], ...]:
  library, scripts = _source_roots()
  root = scripts.parent
  commit = _git(root, "rev-parse", "--verify", "HEAD")
  status = None if commit is None else _git(root, "status", "--porcelain", "--untracked-files=normal", "--",
                                            "jaxdrop", "experiments")
  return (("source_sha256", _sources_sha256(library, scripts)),
          ("git_commit", None if commit is None else commit.strip()),
          ("git_dirty", None if status is None else bool(status.strip())))


def code_fingerprint() -> dict[str, Any]:
  """The code this process runs: a hash of its source files, and the git commit they come from.

  ``source_sha256`` is the sha256 over the library's and the experiments' source
  files (:data:`SOURCES`: each one's path relative to its package's parent,
  its length and its bytes, in sorted order). It is what decides the model a run
  trains, so it is pinned (:data:`PINNED`): ``--resume`` and ``replay`` refuse
  a change. ``git_commit`` (``HEAD`` of the repository holding the experiments)
  and ``git_dirty`` (whether ``jaxdrop/`` or ``experiments/`` differ from it)
  are recorded to tell a user which code a run had, and are not pinned: a
  commit that leaves the sources as they were (documentation, tests, a rebase)
  changes no bit, and a replay must not refuse it. Either is ``None`` where
  there is no git, no repository, or git does not answer within
  :data:`GIT_TIMEOUT_S` seconds.

  Computed once per process, at the first call: the code a process runs is the
  code it imported, whatever is edited afterwards.

  Returns:
    ``{"source_sha256": str | None, "git_commit": str | None, "git_dirty": bool | None}``.

  Example::

    >>> sorted(code_fingerprint())
    ['git_commit', 'git_dirty', 'source_sha256']
  """
  return dict(_code_fingerprint())


def environment() -> dict[str, Any]:
  """Library versions, random-number settings, compiler flags, devices and the code of this process.

  The code is :func:`code_fingerprint`'s: the sources' hash (pinned) and their git commit (information).
  """
  import flax
  import jaxlib
  import optax

  import jaxdrop

  device = jax.devices()[0]
  return {
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      "jaxdrop": jaxdrop.__version__,
      "mask_generator": jaxdrop.MASK_GENERATOR,
      "mask_generator_7": jaxdrop.MASK_GENERATOR_7,  # the masks of runs with --mask-generator philox4x32-7
      "prng_impl": str(jax.config.jax_default_prng_impl),
      "threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
      "xla_flags": os.environ.get("XLA_FLAGS", ""),
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "machine": platform.machine(),
      **code_fingerprint(),
  }


def _code_state(env: dict[str, Any]) -> str:
  """``"git commit 0123456789ab, with uncommitted changes"``: what ``env``'s git facts say of its code."""
  commit, dirty = env.get("git_commit"), env.get("git_dirty")
  if not isinstance(commit, str):
    return "no git commit recorded"
  state = {True: "with uncommitted changes", False: "clean"}.get(dirty, "state unknown")
  return f"git commit {commit[:12]}, {state}"


def _difference(key: str, recorded: dict[str, Any], now: dict[str, Any]) -> str:
  if key == "source_sha256":
    short = lambda env: str(env.get(key))[:12]
    return (f"{key} (the code, {SOURCES}, was edited): the run has {short(recorded)}"
            f" ({_code_state(recorded)}), now {short(now)} ({_code_state(now)})")
  return f"{key}: the run has {recorded[key]!r}, now {now.get(key)!r}"


def environment_differences(recorded: Any, now: dict[str, Any]) -> list[str]:
  """``"name: the run has A, now B"`` for each :data:`PINNED` fact that differs (one an old record lacks:
  skipped).

  A code difference says which git commit (and whether uncommitted changes) the run had and this process has.
  A ``recorded`` that is not a dict (a damaged file) is one difference: nothing in it can be compared.
  """
  if not isinstance(recorded, dict):
    return [(f"environment: the run recorded {type(recorded).__name__} {str(recorded)[:40]!r} instead of its"
             " facts (a damaged file), so nothing can be compared")]
  return [_difference(k, recorded, now) for k in PINNED if k in recorded and recorded[k] != now.get(k)]


def seeds_entry(name: str, seeds: list[int], entries: list[dict[str, Any]]) -> dict[str, Any]:
  """The record entry of several seeds of one run: mean curves, per-metric summaries, each seed's entry."""
  history = {k: np.mean([e["history"][k] for e in entries], axis=0).tolist() for k in entries[0]["history"]}
  summary = {k: seed_summary([e["final"][k] for e in entries], metric_range(k)) for k in entries[0]["final"]}
  return {
      "name": name,
      "seeds": seeds,
      "history": history,
      "final": {k: v["mean"] for k, v in summary.items()},
      "summary": summary,
      "param_sha256": [e["param_sha256"] for e in entries],
      "steps": entries[0]["steps"],
      "execution": entries[0]["execution"],
      "per_seed": entries,
  }


def metric_range(name: str) -> tuple[float, float]:
  """The values a metric can take, by its name: ``[0, 1]`` for accuracies and calibration errors, ``[0, inf)``
  for losses and entropies, anything for the rest.

  Example:
    >>> metric_range("train_acc"), metric_range("test_loss"), metric_range("w_norm")
    ((0.0, 1.0), (0.0, inf), (-inf, inf))
  """
  if "acc" in name or name == "ece":
    return 0.0, 1.0
  if "loss" in name or "entropy" in name:
    return 0.0, math.inf
  return -math.inf, math.inf


def seed_summary(values: list[float], bounds: tuple[float, float] = (-math.inf, math.inf)) -> dict[str, Any]:
  """Mean, sample standard deviation and Student-t 95 % confidence interval of the mean, clipped to ``bounds``.

  With few seeds the t interval is wide: an accuracy of 0.2 +- 0.1 over two seeds would reach below 0,
  which no accuracy can. The interval is cut to the metric's range (:func:`metric_range`), and
  ``ci95_clipped`` says whether it was.

  Example:
    >>> s = seed_summary([0.1, 0.3], bounds=(0.0, 1.0))
    >>> round(s["mean"], 4), s["ci95"][0], s["ci95_clipped"]
    (0.2, 0.0, True)
  """
  from scipy import stats

  values = np.asarray(values, np.float64)
  mean, n = float(values.mean()), len(values)
  sd = float(values.std(ddof=1)) if n > 1 else 0.0
  half = float(stats.t.ppf(0.975, n - 1) * sd / math.sqrt(n)) if n > 1 else 0.0
  low, high = bounds
  ci = [max(mean - half, low), min(mean + half, high)]
  return {"mean": mean, "sd": sd, "ci95": ci, "ci95_clipped": ci != [mean - half, mean + half], "n": n}


def reduced_options(config: dict[str, Any], full: Any, names) -> list[str]:
  """Of ``names``, the options of a recorded ``config`` that differ from ``full`` (the experiment's full form,
  a default :class:`~experiments.config.Config`), as a report says them: ``"steps 200 (full: 1500)"``.

  Example:
    >>> import types
    >>> reduced_options({"steps": 200, "seeds": 3, "sizes": [100]}, types.SimpleNamespace(steps=1500, seeds=3,
    ...                 sizes=(100, 500)), ["steps", "seeds", "sizes"])
    ['steps 200 (full: 1500)', 'sizes 100 (full: 100 500)']
  """
  def as_option(value):
    return tuple(value) if isinstance(value, list) else value

  return [f"{name.replace('_', ' ')} {shown(as_option(config[name]))} (full: {shown(getattr(full, name))})"
          for name in names if as_option(config[name]) != getattr(full, name)]


def mean_sd(values) -> str:
  """``"0.9764 ± 0.0030"``: the mean and the sample standard deviation (``ddof=1``; 0 for one value), as the
  report prints them.

  Example:
    >>> mean_sd([0.5, 0.7])
    '0.6000 ± 0.1414'
  """
  values = np.asarray(values, np.float64)
  sd = float(values.std(ddof=1)) if len(values) > 1 else 0.0
  return f"{values.mean():.4f} ± {sd:.4f}"


def run_entry(name: str, result: FitResult) -> dict[str, Any]:
  """A run's record entry: history, final metrics, parameter hash, steps and execution path."""
  return {
      "name": name,
      "history": result.history,
      "final": {k: v[-1] for k, v in result.history.items() if k != "epoch"},
      "param_sha256": param_sha256(result.state.params),
      "steps": int(result.state.step),
      "execution": result.execution,
  }


def describe(entry: dict[str, Any]) -> str:
  """One summary line: ``name: train loss ..., train acc ..., test acc ...`` (means and 95 % CIs over seeds)."""
  if "summary" in entry:
    parts = [f"{k.replace('_', ' ')} {v['mean']:.4f} +- {v['sd']:.4f} (95% CI {v['ci95'][0]:.4f}..{v['ci95'][1]:.4f})"
             for k, v in entry["summary"].items()]
    return f"{entry['name']} ({len(entry['seeds'])} seeds): " + ", ".join(parts)
  parts = [f"{k.replace('_', ' ')} {v:.4f}" for k, v in entry["final"].items()]
  return f"{entry['name']}: " + ", ".join(parts)


class RunRecord:
  """Accumulates ``record.json`` for one experiment run and writes it.

  Args:
    name: the experiment's name (``"e2"``).
    title: its one-line title.
    source: the tutorial (or paper) it reproduces.
    config: its options.
    out_dir: the run folder.
  """

  def __init__(self, name: str, title: str, source: str, config: Config, out_dir: Path):
    self.out_dir = out_dir
    self.had_record = (out_dir / "record.json").exists()
    self.started = time.perf_counter()
    self.data: dict[str, Any] = {
        "experiment": name,
        "title": title,
        "source": source,
        "config": dataclasses.asdict(config),
        "seed": config.seed,
        "started_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "environment": environment(),
        "execution_path": config.path,
        "dataset": None,
        "runs": [],
        "figures": [],
        "status": "running",
    }

  def set_dataset(self, data: Dataset, requested: str) -> None:
    self.data["dataset"] = {
        "name": data.name,
        "requested": requested,
        "train_size": int(len(data.y_train)),
        "test_size": int(len(data.y_test)),
        "note": data.note,
    }

  def add_run(self, entry: dict[str, Any]) -> None:
    self.data["runs"].append(entry)

  def add_figure(self, path: str | Path) -> None:
    self.data["figures"].append(Path(path).name)

  def finish(self, status: str = "ok", **extra) -> dict[str, Any]:
    """Writes ``record.json``; a failed run next to an earlier record writes ``record-failed-<time>.json``."""
    self.data.update(extra)
    self.data["status"] = status
    self.data["wall_time_s"] = round(time.perf_counter() - self.started, 3)
    path = self.out_dir / "record.json"
    if status != "ok" and self.had_record:  # a resumed run that failed: keep the earlier record
      stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
      path = self.out_dir / f"record-failed-{stamp}.json"
    write_json(path, self.data)
    return self.data

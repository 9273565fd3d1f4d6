"""``python -m experiments replay RUN_DIR``: a recorded run, run again from its ``record.json`` alone.

The record holds the experiment, every option and the facts of the environment
that decide the bits (:data:`experiments.records.PINNED`: library versions, the
mask generator, jax's PRNG implementation and ``jax_threefry_partitionable``,
``XLA_FLAGS``, the backend and the devices). A replay refuses to run under
another environment, naming each difference, unless ``allow_env_change``; it
then trains the run again and reports whether every final parameter hash is
bitwise the one recorded and, where not, the first epoch whose metrics differ.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from experiments.config import config_values
from experiments.records import PINNED, environment, environment_differences, write_json
from experiments.registry import run_experiment
from experiments.runner import Emit
from jaxdrop.errors import ConfigError

__all__ = ["check_environment", "compare", "describe_replay", "load_record", "replay"]

# Options that only decide how a run is saved: a replay trains straight through, without checkpoints.
NOT_REPLAYED = {"resume": False, "checkpoint_every": 0}


def load_record(run_dir: str | Path) -> dict[str, Any]:
  """The ``record.json`` of a finished run in ``run_dir`` (one-line :class:`ConfigError` otherwise)."""
  path = Path(run_dir) / "record.json"
  try:
    record = json.loads(path.read_text())
  except FileNotFoundError:
    raise ConfigError(f"replay: {path} does not exist; give the folder of a finished run (its --out).") from None
  except (OSError, ValueError) as e:
    raise ConfigError(f"replay: {path} cannot be read as a record ({e}).") from None
  if not isinstance(record, dict) or not {"experiment", "config", "environment", "runs"} <= set(record):
    raise ConfigError(f"replay: {path} is not a jaxdrop run record (no experiment, config, environment and runs).")
  if record.get("status") != "ok":
    raise ConfigError(f"replay: the run in {run_dir} did not finish (status {record.get('status')!r}); only a"
                      " finished run has final parameters to compare.")
  return record


def check_environment(record: dict[str, Any], *, allow_env_change: bool) -> list[str]:
  """The pinned facts in which this process differs from the record; :class:`ConfigError` if any, unless allowed."""
  differences = environment_differences(record["environment"], environment())
  if differences and not allow_env_change:
    raise ConfigError(f"replay: the run was recorded under another environment ({'; '.join(differences)}); replay"
                      " it there, or pass --allow-env-change to replay it anyway and see whether its bits survive.")
  return differences


def _first_difference(recorded: dict[str, list], replayed: dict[str, list]) -> dict[str, Any] | None:
  """The first epoch at which a metric of the history differs: epoch, metric, both values."""
  for i, epoch in enumerate(recorded.get("epoch", [])):
    for metric, values in recorded.items():
      other = replayed.get(metric, [])
      if metric != "epoch" and (i >= len(other) or other[i] != values[i]):
        return {"epoch": epoch, "metric": metric, "recorded": values[i], "replayed": other[i] if i < len(other) else None}
  return None


def compare(recorded: dict[str, Any], replayed: dict[str, Any]) -> dict[str, Any]:
  """Run by run: whether the final parameter hashes are equal and, if not, the first differing epoch."""
  new_runs = {r["name"]: r for r in replayed["runs"]}
  runs = []
  for run in recorded["runs"]:
    again = new_runs.get(run["name"], {})
    same = "param_sha256" in run and again.get("param_sha256") == run["param_sha256"]
    runs.append({"name": run["name"], "identical": same, "recorded_sha256": run.get("param_sha256"),
                 "replayed_sha256": again.get("param_sha256"),
                 "first_difference": None if same else _first_difference(run["history"], again.get("history", {}))})
  return {"identical": bool(runs) and all(r["identical"] for r in runs), "runs": runs}


def replay(run_dir: str | Path, out_dir: str | Path, *, allow_env_change: bool = False, emit: Emit = print,
           quiet: bool = True) -> dict[str, Any]:
  """Runs the recorded run in ``run_dir`` again into ``out_dir`` and compares; writes ``out_dir/replay.json``.

  Raises:
    ConfigError: no readable, finished record; or an environment that differs
      from the recorded one in a pinned fact, without ``allow_env_change``.
  """
  record = load_record(run_dir)
  differences = check_environment(record, allow_env_change=allow_env_change)
  unrecorded = [k for k in PINNED if k not in record["environment"]]
  for line in differences:
    emit(f"environment changed, replaying anyway: {line}")
  if unrecorded:
    emit(f"not in the record (an older run), so not compared: {', '.join(unrecorded)}")
  options = config_values(record["config"])
  replayed = run_experiment(record["experiment"], out_dir, emit=(lambda line: None) if quiet else emit,
                            quiet=quiet, **{**options, **NOT_REPLAYED})
  result = {"run_dir": str(Path(run_dir).absolute()), "experiment": record["experiment"],
            "environment_differences": differences, "not_recorded": unrecorded, **compare(record, replayed)}
  write_json(Path(out_dir) / "replay.json", result)
  return result


def describe_replay(result: dict[str, Any]) -> list[str]:
  """One line per run and a verdict."""
  lines = []
  for run in result["runs"]:
    if run["identical"]:
      lines.append(f"{run['name']}: bitwise identical (param_sha256 {str(run['recorded_sha256'])[:16]}...)")
      continue
    first = run["first_difference"]
    where = ("the metrics of every epoch agree; only the final parameters differ" if first is None else
             f"first differs at epoch {first['epoch']} ({first['metric']}: recorded {first['recorded']!r}, replayed"
             f" {first['replayed']!r})")
    lines.append(f"{run['name']}: NOT bitwise identical; {where}")
  verdict = "bitwise identical" if result["identical"] else "NOT bitwise identical"
  lines.append(f"replay of {result['experiment']} from {result['run_dir']}: {verdict}")
  return lines

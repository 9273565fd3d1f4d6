"""``python -m experiments replay RUN_DIR``: a recorded run, run again from its ``record.json`` alone.

The record holds the experiment, every option and the facts of the environment
that decide the bits (:data:`experiments.records.PINNED`: library versions, the
mask generator, jax's PRNG implementation and ``jax_threefry_partitionable``,
``XLA_FLAGS``, the backend, the devices and the hash of the code). A replay
refuses to run under another environment, naming each difference, unless
``allow_env_change``; it then trains the run again and reports, for every
recorded run and every seed of it, whether its final parameter hash is bitwise
the one recorded and, where not, the first epoch whose metrics differ.

Every folder that ``python -m experiments reproduce`` writes replays: each
experiment's subfolder, the dropout comparison's (``dropout``), and the
reproduce folder itself, whose parts are replayed one after the other.

Everything a replay needs is checked before anything is trained: a damaged
record is a one-line :class:`~experiments.errors.ConfigError` naming the file and
the field. A record written before an option was renamed replays under the
option's new name (:data:`experiments.config.RENAMED`).
"""

from __future__ import annotations

import math
import types
import typing
from pathlib import Path
from typing import Any

from experiments.config import RENAMED, config_values
from experiments.e2_d2l_mlp import DROPOUT_VS_NONE as DROPOUT
from experiments.e2_d2l_mlp import compare_dropout
from experiments.errors import ConfigError, OutputMismatchError
from experiments.files import read_json, write_json
from experiments.records import PINNED, environment, environment_differences
from experiments.registry import EXPERIMENTS, run_experiment
from experiments.reproduce import PARTS
from experiments.run_folder import MARKER_FILE
from experiments.runner import Emit

__all__ = ["DROPOUT", "check_environment", "check_parts", "compare", "describe_replay", "load_parts",
           "load_record", "replay"]

# Options that only decide how a run is saved: a replay trains straight through, without checkpoints.
NOT_REPLAYED = {"resume": False, "checkpoint_every": 0}
# DROPOUT: the ``experiment`` of reproduce's dropout comparison's record (E2's part, not a registered experiment).
REQUIRED = {"experiment", "config", "environment"}  # and "runs", but for the dropout comparison's "groups"
REPRODUCE_KIND = "reproduce"


# --- reading and checking a record ----------------------------------------------------------------------


def _shown(value: Any) -> str:
  text = repr(value)
  return f"{type(value).__name__} {text[:40] + '...' if len(text) > 40 else text}"


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


class _Checker:
  """Raises a one-line :class:`ConfigError` naming the record file and the field."""

  def __init__(self, path: Path):
    self.path = path

  def fail(self, field: str, problem: str) -> typing.NoReturn:
    raise ConfigError(f"replay: {self.path}: {field} {problem}; the record is damaged or not jaxdrop's: give"
                      " the folder of another finished run, or run the experiment again.")

  def entry(self, field: str, entry: Any, *, seeds: bool = True) -> None:
    """A run entry: a name, a history of lists, a hash (or, with several seeds, each seed's entry)."""
    if not isinstance(entry, dict):
      self.fail(field, f"is {_shown(entry)}, not a run entry (a JSON object)")
    if not isinstance(entry.get("name"), str):
      self.fail(f"{field}.name", f"is {_shown(entry.get('name'))}, not a string")
    history = entry.get("history")
    if not isinstance(history, dict) or not all(isinstance(v, list) for v in history.values()):
      self.fail(f"{field}.history", f"is {_shown(history)}, not an object of per-epoch lists")
    if "seed" in entry and not _is_int(entry["seed"]):
      self.fail(f"{field}.seed", f"is {_shown(entry['seed'])}, not an integer")
    sha = entry.get("param_sha256")
    if isinstance(sha, str):
      return
    if not (seeds and isinstance(sha, list)):
      self.fail(f"{field}.param_sha256", f"is {_shown(sha)}, not a hash (a string)"
                + (" or a list of them, one per seed" if seeds else ""))
    per_seed = entry.get("per_seed")
    if not isinstance(per_seed, list) or len(per_seed) != len(sha) or not sha:
      self.fail(f"{field}.per_seed", f"is {_shown(per_seed)}, not a list of {len(sha)} seed entries (one per"
                " hash in param_sha256)")
    for i, seed_entry in enumerate(per_seed):
      self.entry(f"{field}.per_seed[{i}]", seed_entry, seeds=False)
      if seed_entry["param_sha256"] != sha[i]:
        self.fail(f"{field}.param_sha256[{i}]", f"is {_shown(sha[i])}, but per_seed[{i}] has"
                  f" {seed_entry['param_sha256'][:16]!r}...: the two disagree")

  def runs(self, field: str, runs: Any) -> None:
    if not isinstance(runs, list):
      self.fail(field, f"is {_shown(runs)}, not a list of run entries")
    if not runs:
      self.fail(field, "is empty: there is no run to compare")
    for i, entry in enumerate(runs):
      self.entry(f"{field}[{i}]", entry)

  def config(self, record: dict[str, Any]) -> None:
    """Every recorded option is one of the experiment's, of its type (a list for a tuple)."""
    config = record["config"]
    if not isinstance(config, dict):
      self.fail("config", f"is {_shown(config)}, not an object of options")
    if record["experiment"] == DROPOUT:
      return  # replayed from its seeds and epochs (see _replay_dropout)
    cls = EXPERIMENTS[record["experiment"]].config
    hints = typing.get_type_hints(cls)
    for key, value in config.items():
      if key in RENAMED and key not in hints:  # an option renamed since: every one so far was a boolean
        if not isinstance(value, bool):
          self.fail(f"config.{key}", f"is {_shown(value)}, not true or false")
        new, convert = RENAMED[key]
        key, value = new, convert(value)
      if key not in hints:
        self.fail(f"config.{key}", f"is not an option of {record['experiment']} (its options:"
                  f" {', '.join(sorted(hints))})")
      if not _fits(value, hints[key]):
        self.fail(f"config.{key}", f"is {_shown(value)}, not {_expected(hints[key])}")

  def dropout(self, record: dict[str, Any]) -> None:
    """The dropout comparison's record: its seeds 0..n-1, its epochs and each group's runs."""
    seeds, epochs, groups = record.get("seeds"), record.get("epochs"), record.get("groups")
    if not (isinstance(seeds, list) and seeds and seeds == list(range(len(seeds)))):
      self.fail("seeds", f"is {_shown(seeds)}, not the list 0, 1, ..., n-1 that reproduce trains")
    if not (_is_int(epochs) and epochs > 0):
      self.fail("epochs", f"is {_shown(epochs)}, not a positive integer")
    if not (isinstance(groups, dict) and groups):
      self.fail("groups", f"is {_shown(groups)}, not an object of configurations")
    for label, group in groups.items():
      if not isinstance(group, dict):
        self.fail(f"groups.{label}", f"is {_shown(group)}, not an object with runs")
      self.runs(f"groups.{label}.runs", group.get("runs"))


_NAMES = {bool: ("true or false", "booleans"), int: ("an integer", "integers"),
          float: ("a number", "numbers"), str: ("a string", "strings")}


def _expected(hint) -> str:
  if typing.get_origin(hint) in (typing.Union, types.UnionType):
    return " or ".join(_expected(a) for a in typing.get_args(hint))
  if hint is type(None):
    return "null"
  if typing.get_origin(hint) is tuple:
    return f"a list of {_NAMES.get(typing.get_args(hint)[0], ('', 'values'))[1]}"
  return _NAMES.get(hint, (str(hint),))[0]


def _fits(value: Any, hint) -> bool:
  """Whether a JSON value can be the option of annotation ``hint`` (a tuple option is a JSON list)."""
  origin = typing.get_origin(hint)
  if origin in (typing.Union, types.UnionType):
    return any(_fits(value, a) for a in typing.get_args(hint))
  if hint is type(None):
    return value is None
  if origin is tuple:
    return isinstance(value, list) and all(_fits(v, typing.get_args(hint)[0]) for v in value)
  if hint is bool:
    return isinstance(value, bool)
  if hint is int:
    return _is_int(value)
  if hint is float:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
  if hint is str:
    return isinstance(value, str)
  return True


def load_record(run_dir: str | Path) -> dict[str, Any]:
  """The ``record.json`` of a finished run in ``run_dir``, checked for everything a replay reads.

  Raises:
    ConfigError: one line naming the file and the field: no file, not JSON (or
      nested too deeply), not a record, an experiment that is not jaxdrop's, a
      run that did not finish, or a field of the wrong type (``runs: "abc"``,
      ``config: "abc"``, an ``environment`` that is not an object, an option
      the experiment does not have).
  """
  path = Path(run_dir) / "record.json"
  try:
    record = read_json(path)
  except FileNotFoundError:
    raise ConfigError(f"replay: {path} does not exist; give the folder of a finished run (its"
                      " --out).") from None
  except (OSError, ValueError) as e:
    raise ConfigError(f"replay: {path} cannot be read as a record ({str(e).splitlines()[0][:200]}).") from None
  name = record.get("experiment") if isinstance(record, dict) else None
  required = REQUIRED | ({"groups"} if name == DROPOUT else {"runs"})
  if not isinstance(record, dict) or not required <= set(record):
    raise ConfigError(f"replay: {path} is not a jaxdrop run record (no experiment, config, environment and"
                      " runs).")
  check = _Checker(path)
  if not isinstance(name, str) or (name not in EXPERIMENTS and name != DROPOUT):
    check.fail("experiment", f"is {_shown(name)}, not one of jaxdrop's experiments ({', '.join(EXPERIMENTS)},"
               f" or reproduce's {DROPOUT})")
  status = record.get("status", "ok" if name == DROPOUT else None)  # the comparison writes it when done
  if status != "ok":
    raise ConfigError(f"replay: the run in {run_dir} did not finish (status {status!r}); only a finished run"
                      " has final parameters to compare.")
  if not isinstance(record["environment"], dict):
    check.fail("environment", f"is {_shown(record['environment'])}, not an object of the run's facts"
               " (versions, devices, code), so it cannot be compared")
  check.config(record)
  if name == DROPOUT:
    check.dropout(record)
  else:
    check.runs("runs", record["runs"])
  return record


def _reproduce_parts(run_dir: Path) -> list[str] | None:
  """The parts ``reproduce`` wrote into ``run_dir``, if it is a reproduce folder (its marker says so)."""
  if (run_dir / "record.json").exists():
    return None
  try:
    marker = read_json(run_dir / MARKER_FILE)
  except (OSError, ValueError):
    return None
  if not (isinstance(marker, dict) and marker.get("kind") == REPRODUCE_KIND):
    return None
  return [name for name in PARTS if (run_dir / name).is_dir()]


def load_parts(run_dir: str | Path) -> dict[str, dict[str, Any]]:
  """The records a replay of ``run_dir`` runs again, each checked (:func:`load_record`).

  Returns:
    ``{"": record}`` for a run's folder; for the folder of ``python -m
    experiments reproduce``, each part it holds (``{"e3": ..., "dropout": ...}``,
    in the order reproduce runs them).

  Raises:
    ConfigError: a record that cannot be replayed (see :func:`load_record`), or
      a reproduce folder without any part.
  """
  run_dir = Path(run_dir)
  parts = _reproduce_parts(run_dir)
  if parts is None:
    return {"": load_record(run_dir)}
  if not parts:
    raise ConfigError(f"replay: {run_dir} is a reproduce folder without any part yet; give a finished one.")
  return {name: load_record(run_dir / name) for name in parts}


def check_environment(record: dict[str, Any], *, allow_env_change: bool) -> list[str]:
  """The pinned facts in which this process differs from the record; :class:`ConfigError` if any, unless
  ``allow_env_change``."""
  differences = environment_differences(record["environment"], environment())
  if differences and not allow_env_change:
    hint = ""
    if any(d.startswith("source_sha256") for d in differences):
      commit, dirty = record["environment"].get("git_commit"), record["environment"].get("git_dirty")
      hint = (f" (with its code: git commit {commit[:12]}{' and the changes it had' if dirty else ''})"
              if isinstance(commit, str) else " (with the code it ran)")
    raise ConfigError(f"replay: the run was recorded under another environment ({'; '.join(differences)});"
                      f" replay it there{hint}, or pass --allow-env-change to replay it anyway and see whether"
                      " its bits survive.")
  return differences


def _check_options(name: str, record: dict[str, Any], run_dir: Path) -> dict[str, Any]:
  """The options to replay with, validated as ``run`` would: a bad value is refused before any training."""
  if name == DROPOUT:
    return {}
  options = {**config_values(record["config"]), **NOT_REPLAYED}
  try:
    EXPERIMENTS[name].config(**options).validate()
  except ConfigError as e:
    raise ConfigError(f"replay: {run_dir / 'record.json'}: config: {e}") from None
  return options


# --- comparing ----------------------------------------------------------------------------------------


def _runs_of(record: dict[str, Any]) -> list[dict[str, Any]]:
  if record["experiment"] == DROPOUT:
    return [run for group in record["groups"].values() for run in group["runs"]]
  return record["runs"]


def _seed_rows(record: dict[str, Any]) -> list[dict[str, Any]]:
  """One row per trained model, in the record's order: a run of one seed, or each seed of a seeds entry."""
  rows = []
  for position, entry in enumerate(_runs_of(record)):
    for seed_entry in entry["per_seed"] if isinstance(entry["param_sha256"], list) else [entry]:
      rows.append({"position": position, "name": entry["name"], "seed": seed_entry.get("seed"),
                   "sha256": seed_entry["param_sha256"], "history": seed_entry["history"]})
  return rows


def _same(a: Any, b: Any) -> bool:
  nan = lambda v: isinstance(v, float) and math.isnan(v)
  return a == b or (nan(a) and nan(b))


def _first_difference(recorded: dict[str, list], replayed: dict[str, list]) -> dict[str, Any] | None:
  """The first epoch at which a metric of the history differs: epoch, metric, both values."""
  for i, epoch in enumerate(recorded.get("epoch", [])):
    for metric, values in recorded.items():
      if metric == "epoch" or i >= len(values):
        continue
      other = replayed.get(metric, [])
      if i >= len(other) or not _same(other[i], values[i]):
        return {"epoch": epoch, "metric": metric, "recorded": values[i],
                "replayed": other[i] if i < len(other) else None}
  return None


def _label(row: dict[str, Any] | None) -> str:
  return "nothing" if row is None else f"{row['name']!r} (seed {row['seed']})"


def compare(recorded: dict[str, Any], replayed: dict[str, Any]) -> dict[str, Any]:
  """Run by run and seed by seed: whether the final parameter hashes are equal, else the first differing epoch.

  The recorded and the replayed runs are matched by position (a record may
  hold several runs of one name, one per seed, as E3's); each must have the
  same name and seed as its twin.

  Returns:
    ``{"identical": bool, "runs": [...]}``, one row per run and seed: ``name``,
    ``seed``, ``identical``, ``recorded_sha256`` and ``replayed_sha256`` (strings)
    and ``first_difference`` (``None`` where identical, or where every epoch's
    metrics agree).

  Raises:
    OutputMismatchError: the replay trained other runs or seeds than the record
      holds (the code or the record changed), so nothing can be compared.
  """
  old, new = _seed_rows(recorded), _seed_rows(replayed)
  for i in range(max(len(old), len(new))):
    a, b = (old[i] if i < len(old) else None), (new[i] if i < len(new) else None)
    twin = lambda row: (row["position"], row["name"], row["seed"])
    if a is None or b is None or twin(a) != twin(b):
      raise OutputMismatchError(
          f"replay: the replay trained other runs than the record holds (models recorded: {len(old)},"
          f" replayed: {len(new)}; model {i + 1} is {_label(a)} in the record and {_label(b)} in the replay):"
          " the code or the record changed since the run, nothing can be compared; rerun the experiment"
          " instead."
      )
  runs = []
  for a, b in zip(old, new, strict=True):
    same = a["sha256"] == b["sha256"]
    runs.append({"name": a["name"], "seed": a["seed"], "identical": same, "recorded_sha256": a["sha256"],
                 "replayed_sha256": b["sha256"],
                 "first_difference": None if same else _first_difference(a["history"], b["history"])})
  return {"identical": bool(runs) and all(r["identical"] for r in runs), "runs": runs}


# --- replaying ----------------------------------------------------------------------------------------


def _replay_dropout(record: dict[str, Any], out_dir: Path, emit: Emit, quiet: bool) -> dict[str, Any]:
  return compare_dropout(out_dir, len(record["seeds"]), emit, quiet, epochs=record["epochs"])


def _replay_one(name: str, record: dict[str, Any], run_dir: Path, out_dir: Path, options: dict[str, Any], *,
                differences: list[str], emit: Emit, quiet: bool) -> dict[str, Any]:
  out_dir.mkdir(parents=True, exist_ok=True)
  lines = (lambda line: None) if quiet else emit
  if name == DROPOUT:
    replayed = _replay_dropout(record, out_dir, lines, quiet)
  else:
    replayed = run_experiment(name, out_dir, emit=lines, quiet=quiet, **options)
  try:
    compared = compare(record, replayed)
  except OutputMismatchError as e:
    raise OutputMismatchError(f"{e} (the replay's own record: {out_dir / 'record.json'})") from None
  result = {"run_dir": str(run_dir.absolute()), "experiment": name, "environment_differences": differences,
            "not_recorded": [k for k in PINNED if k not in record["environment"]], **compared}
  write_json(out_dir / "replay.json", result)
  return result


def check_parts(parts: dict[str, dict[str, Any]], run_dir: str | Path, *,
                allow_env_change: bool) -> dict[str, tuple[list[str], dict[str, Any]]]:
  """Checks each record of :func:`load_parts` against this process: its environment and its options.

  Returns:
    ``{part: (environment differences, options to replay with)}``.

  Raises:
    ConfigError: a pinned fact differs (unless ``allow_env_change``), or an
      option is one the experiment refuses.
  """
  return {part: (check_environment(record, allow_env_change=allow_env_change),
                 _check_options(record["experiment"], record, Path(run_dir) / part))
          for part, record in parts.items()}


def replay(run_dir: str | Path, out_dir: str | Path, *, allow_env_change: bool = False, emit: Emit = print,
           quiet: bool = True) -> dict[str, Any]:
  """Runs the recorded run in ``run_dir`` again into ``out_dir`` and compares; writes ``out_dir/replay.json``.

  ``run_dir`` is a run's folder, or a ``reproduce`` folder: then each part is
  replayed into ``out_dir/<part>`` (with its own ``replay.json``), and the
  result has each part's under ``parts``. Every record, its environment and
  its options are checked before anything is trained.

  Args:
    run_dir: the folder of a finished run (or of ``reproduce``).
    out_dir: an existing folder for the replay's record and figures.
    allow_env_change: replay under another environment, reporting the differences.
    emit: receives the environment's differences and, unless ``quiet``, the runs' lines.
    quiet: no progress bars, no per-run lines.

  Returns:
    ``{"identical": bool, "runs": [...], ...}`` (see :func:`compare`), or for a
    reproduce folder ``{"identical": bool, "parts": {part: result}, ...}``.

  Raises:
    ConfigError: no readable, finished record (see :func:`load_record`), an
      option the experiment refuses, or an environment that differs from the
      recorded one in a pinned fact, without ``allow_env_change``.
    OutputMismatchError: the replay trained other runs than the record holds.

  Example::

    result = replay("runs/e3-20250101-120000", "runs/e3-again")
    assert result["identical"]
  """
  run_dir, out_dir = Path(run_dir), Path(out_dir)
  parts = load_parts(run_dir)
  checked = check_parts(parts, run_dir, allow_env_change=allow_env_change)  # all of them, before any training
  seen = set()
  for part, record in parts.items():
    unrecorded = [k for k in PINNED if k not in record["environment"]]
    lines = [f"environment changed, replaying anyway: {d}" for d in checked[part][0]]
    if unrecorded:
      lines.append(f"not in the record (an older run), so not compared: {', '.join(unrecorded)}")
    for line in lines:
      if line not in seen:  # once, not once per part
        seen.add(line)
        emit(line)
  results = {part: _replay_one(record["experiment"], record, run_dir / part, out_dir / part, checked[part][1],
                               differences=checked[part][0], emit=emit, quiet=quiet)
             for part, record in parts.items()}
  if set(results) == {""}:
    return results[""]
  result = {"run_dir": str(run_dir.absolute()), "experiment": REPRODUCE_KIND,
            "identical": all(r["identical"] for r in results.values()), "parts": results}
  write_json(out_dir / "replay.json", result)
  return result


def _short(sha: Any) -> str:
  return f"{str(sha)[:16]}..."


def describe_replay(result: dict[str, Any]) -> list[str]:
  """One line per run (per seed where a record holds several) and a verdict; for reproduce's, per part."""
  if "parts" in result:
    lines = []
    for part, sub in result["parts"].items():
      lines += [f"{part}: {line}" for line in describe_replay(sub)]
    verdict = "bitwise identical" if result["identical"] else "NOT bitwise identical"
    return [*lines, f"replay of {result['experiment']} from {result['run_dir']}: {verdict}"]
  several = len({run.get("seed") for run in result["runs"]}) > 1
  lines = []
  for run in result["runs"]:
    name = f"{run['name']}, seed {run['seed']}" if several else run["name"]
    if run["identical"]:
      lines.append(f"{name}: bitwise identical (param_sha256 {_short(run['recorded_sha256'])})")
      continue
    first = run["first_difference"]
    where = ("the metrics of every epoch agree; only the final parameters differ" if first is None else
             f"first differs at epoch {first['epoch']} ({first['metric']}: recorded {first['recorded']!r},"
             f" replayed {first['replayed']!r})")
    recorded, replayed = _short(run["recorded_sha256"]), _short(run["replayed_sha256"])
    hashes = f"param_sha256 recorded {recorded}, replayed {replayed}"
    lines.append(f"{name}: NOT bitwise identical; {where} ({hashes})")
  verdict = "bitwise identical" if result["identical"] else "NOT bitwise identical"
  lines.append(f"replay of {result['experiment']} from {result['run_dir']}: {verdict}")
  return lines

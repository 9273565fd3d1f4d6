"""The output folder of a run: created, locked and marked as jaxdrop's, never taken over by mistake.

A folder that jaxdrop writes holds a marker (``.jaxdrop-run.json``: what kind
of run it is and the options that decide its result) and, while a process
writes it, an exclusive lock (``fcntl.flock`` on ``.jaxdrop.lock``, holding
that process's id). The kernel releases the lock when the process ends, however
it ends, so a lock file left by a crash never blocks the next run.

* A new or empty folder is marked and used.
* ``resume`` continues only a run of the same kind with the same options,
  under the same environment (the facts that decide its bits: versions,
  random-number settings, devices); the differences are named, before any
  checkpoint is touched.
* ``overwrite`` replaces only what jaxdrop wrote (the marker says so); a folder
  without one is refused, whatever it holds.
* A second process asking for a folder in use is refused.

Example::

  folder = open_run_folder("runs/e2", kind="e2", options={"lr": 0.1})
  ...  # write record.json, checkpoints/
  folder.release()
"""

from __future__ import annotations

import datetime
import errno
import json
import os
import shutil
import socket
from pathlib import Path
from typing import Any

from jaxdrop.errors import ConfigError, JaxdropError, OutputExistsError, OutputInUseError, OutputMismatchError

__all__ = ["LOCK_FILE", "MARKER_FILE", "RunFolder", "open_run_folder"]

MARKER_FILE = ".jaxdrop-run.json"
LOCK_FILE = ".jaxdrop.lock"
_CONTROL = frozenset({MARKER_FILE, LOCK_FILE})


def _flag(name: str) -> str:
  return "--" + name.replace("_", "-")


def _read_marker(path: Path) -> dict[str, Any] | None:
  """The folder's marker, or what a record written before markers existed says; ``None`` if neither."""
  try:
    return json.loads((path / MARKER_FILE).read_text())
  except FileNotFoundError:
    pass
  except (OSError, ValueError) as e:
    raise OutputMismatchError(f"the marker {path / MARKER_FILE} cannot be read ({e}); choose another --out.") from e
  try:
    record = json.loads((path / "record.json").read_text())
  except (OSError, ValueError):
    return None
  if isinstance(record, dict) and "experiment" in record and "environment" in record:
    return {"kind": record["experiment"], "options": None}  # a run from before markers: options unknown
  return None


def _results(path: Path) -> set[str]:
  """The entries of ``path`` that hold results: all but the control files and a record of a run that
  failed before training anything (a missing data set), which the next attempt may replace."""
  held = {p.name for p in path.iterdir()} - _CONTROL
  if "record.json" in held:
    try:
      record = json.loads((path / "record.json").read_text())
    except (OSError, ValueError):
      return held
    if isinstance(record, dict) and record.get("status") == "failed" and not record.get("runs"):
      held.discard("record.json")
  return held


def _written_by_the_run(path: Path) -> list[Path]:
  """What ``--overwrite`` removes: the checkpoints, the records and the figures the record lists."""
  found = [path / "checkpoints", path / "record.json", *path.glob("record-failed-*.json")]
  try:
    figures = json.loads((path / "record.json").read_text()).get("figures", [])
  except (OSError, ValueError, AttributeError):
    figures = []
  inside = lambda name: isinstance(name, str) and name not in ("", ".", "..") and name == Path(name).name
  found += [path / name for name in figures if inside(name)]
  return [p for p in found if p.exists() or p.is_symlink()]


def _finished_without_checkpoints(path: Path) -> bool:
  try:
    record = json.loads((path / "record.json").read_text())
  except (OSError, ValueError):
    return False
  return isinstance(record, dict) and record.get("status") == "ok" and not (path / "checkpoints").is_dir()


def _option_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
  keys = sorted(set(saved) | set(now))
  return [f"{_flag(k)}: the run has {saved.get(k)!r}, now {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


class RunFolder:
  """An output folder that this process holds the lock of (see :func:`open_run_folder`)."""

  def __init__(self, path: Path, lock_fd: int, *, created: bool, fresh: bool):
    self.path = path
    self._lock_fd = lock_fd
    self._created = created  # the folder did not exist
    self._fresh = fresh  # it held no run: this one wrote the marker

  def release(self) -> None:
    """Unlocks the folder (the lock file stays; it is harmless without a holder)."""
    if self._lock_fd is not None:
      os.close(self._lock_fd)
      self._lock_fd = None

  def abandon(self) -> None:
    """Releases the folder and removes what this run added if nothing else was written.

    For errors found after the folder was opened but before anything was
    computed (a batch size larger than the data set): the same command,
    corrected, then finds the folder as it was.
    """
    if self._fresh and not {p.name for p in self.path.iterdir()} - _CONTROL:
      for name in _CONTROL:
        (self.path / name).unlink(missing_ok=True)
      if self._created:
        try:
          self.path.rmdir()
        except OSError:
          pass
    self.release()

  def __enter__(self) -> RunFolder:
    return self

  def __exit__(self, *exc) -> None:
    self.release()


def _lock(path: Path) -> int:
  """Takes the folder's exclusive lock, or raises :class:`OutputInUseError` naming the holder."""
  import fcntl

  fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o664)
  try:
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except OSError as e:
    holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
    os.close(fd)
    if e.errno in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
      raise OutputInUseError(
          f"output folder {path} is in use by another jaxdrop process ({holder}); wait for it to end, or"
          " choose another --out."
      ) from None
    raise
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  os.ftruncate(fd, 0)
  os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
  return fd


def _check_environment(path: Path, recorded: dict[str, Any] | None, now: dict[str, Any] | None) -> None:
  from experiments.records import environment_differences

  diffs = [] if recorded is None or now is None else environment_differences(recorded, now)
  if diffs:
    raise OutputMismatchError(
        f"--resume: the run in {path} was started under another environment ({'; '.join(diffs)}): its remaining"
        " steps would not draw the bits its first ones did; resume it where it started, or start a new run in"
        " another --out."
    )


def _write_marker(path: Path, kind: str, options: dict[str, Any], environment: dict[str, Any] | None) -> None:
  from experiments.records import write_json

  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  write_json(path / MARKER_FILE, {"written_by": "jaxdrop", "kind": kind, "options": options, "created": stamp,
                                  "environment": environment})


def open_run_folder(
    path: str | os.PathLike,
    *,
    kind: str,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    environment: dict[str, Any] | None = None,
) -> RunFolder:
  """Creates (or reopens) a run's output folder and locks it for this process.

  Args:
    path: the folder (created with its parents when missing).
    kind: what runs there: an experiment's name, ``"reproduce"`` or ``"bench"``.
    options: the options that decide the run's result (JSON-ready); a resumed
      run must have the same (``None``: not compared).
    overwrite: replace the results of an earlier run of the folder.
    resume: continue the run the folder holds.
    environment: this process's ``experiments.records.environment()``; kept in
      the marker, and a resumed run must have the same pinned facts.

  Returns:
    A :class:`RunFolder`; call ``release()`` (or use it as a context manager)
    when done, ``abandon()`` if nothing was written.

  Raises:
    ConfigError: both flags, or ``path`` is not a folder.
    OutputExistsError: the folder holds files and no flag says what to do
      with them, or ``overwrite`` on a folder jaxdrop did not write
      (``overwrite`` removes only the earlier run's checkpoints, records and
      the figures its record lists).
    OutputMismatchError: ``resume`` on a run of another kind, options or environment.
    OutputInUseError: another process holds the folder.
    PermissionError: the folder cannot be written.
  """
  path = Path(path)
  options = None if options is None else json.loads(json.dumps(options))  # tuples become lists, as in the marker
  if overwrite and resume:
    raise ConfigError("--overwrite starts afresh and --resume continues; pass only one of them.")
  if path.exists() and not path.is_dir():
    raise ConfigError(f"--out {path} is a file, not a folder; give a folder path (it is created when missing).")
  created = not path.exists()
  if not created:
    try:
      held = {p.name for p in path.iterdir()} - _CONTROL
    except OSError as e:
      raise PermissionError(f"cannot read output folder {path}: {e.strerror or e}; choose another --out.") from e
    if held and _read_marker(path) is None:
      what = "resume" if resume else "overwrite" if overwrite else "use"
      raise OutputExistsError(
          f"output folder {path} holds files that jaxdrop did not write ({', '.join(sorted(held)[:3])}...);"
          f" it will not {what} it: choose another --out."
      )
  try:
    path.mkdir(parents=True, exist_ok=True)
    lock_fd = _lock(path)
  except OSError as e:
    raise PermissionError(f"cannot write to output folder {path}: {e.strerror or e}; choose another --out.") from e
  try:
    marker = _read_marker(path)
    held = _results(path)
    if marker is not None and (held or resume):
      if resume:
        if marker.get("kind") != kind:
          raise OutputMismatchError(
              f"--resume: output folder {path} holds a run of {marker.get('kind')}, not {kind}; resume it with"
              f" `python -m experiments run {marker.get('kind')} --resume`, or choose another --out for {kind}."
          )
        unknown = marker.get("options") is None or options is None
        diffs = [] if unknown else _option_differences(marker["options"], options)
        if diffs:
          raise OutputMismatchError(
              f"--resume: the run in {path} was started with other options ({'; '.join(diffs)}); resume with the"
              " run's options, or start a new run in another --out."
          )
        _check_environment(path, marker.get("environment"), environment)
        if _finished_without_checkpoints(path):
          raise OutputMismatchError(
              f"--resume: the run in {path} finished and kept no checkpoints (it ran without --checkpoint-every):"
              " there is nothing to continue and its record stands; to train it longer, rerun with --overwrite"
              " (same seed, same first epochs) or into another --out."
          )
      elif overwrite:
        for target in _written_by_the_run(path):
          if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
          else:  # a file, or a link (never followed)
            target.unlink(missing_ok=True)
      else:
        raise OutputExistsError(
            f"output folder {path} already holds a run; choose another --out, pass --resume to continue it"
            " from its checkpoints, or --overwrite to replace it."
        )
    fresh = marker is None or overwrite or not held
    if fresh:
      _write_marker(path, kind, options, environment)
    probe = path / ".write-test"
    probe.write_text("")
    probe.unlink()
  except JaxdropError:
    os.close(lock_fd)
    raise
  except OSError as e:
    os.close(lock_fd)
    raise PermissionError(f"cannot write to output folder {path}: {e.strerror or e}; choose another --out.") from e
  except BaseException:
    os.close(lock_fd)
    raise
  return RunFolder(path, lock_fd, created=created, fresh=fresh)

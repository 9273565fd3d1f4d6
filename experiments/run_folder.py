"""The output folder of a run: created, locked and marked as jaxdrop's, never taken over by mistake.

A folder that jaxdrop writes holds a marker (``.jaxdrop-run.json``: what kind
of run it is and the options that decide its result) and, while a process
writes it, an exclusive lock (``fcntl.flock`` on ``.jaxdrop.lock``, holding
that process's id). The kernel releases the lock when the process ends, however
it ends, so a lock file left by a crash never blocks the next run.

* A new or empty folder is marked and used; a folder inside another run's
  folder is refused.
* ``resume`` continues only a run of the same kind with the same options,
  under the same environment (the facts that decide its bits: versions,
  random-number settings, devices); the differences are named, before any
  checkpoint is touched.
* ``overwrite`` replaces only what jaxdrop wrote (the marker says so); a folder
  without one is refused, whatever it holds. Even then it removes only the
  files a run writes, by name (:data:`RUN_FILES`, ``record-failed-*.json``,
  the step folders of ``checkpoints/``, and the same in the subfolders the
  caller names as the run's ``parts``), never a folder that holds another
  run's marker or lock, and never anything a link points to.
* A second process asking for a folder in use is refused.
* Nothing is written through a link: the lock is opened with ``O_NOFOLLOW``
  and must be a plain file of one name, the marker and the records are
  replaced by a rename, and a link where a run writes a file is removed by
  ``overwrite`` and refused by ``resume``. The folder itself may be a link
  (to a folder of the user's choice).

Example::

  folder = open_run_folder("runs/e2", kind="e2", options={"lr": 0.1})
  ...  # write record.json, checkpoints/
  folder.release()
"""

from __future__ import annotations

import datetime
import errno
import json
import logging
import os
import re
import socket
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from experiments.config import flag
from experiments.errors import ConfigError, OutputExistsError, OutputInUseError, OutputMismatchError
from experiments.files import read_json, write_json
from experiments.records import environment_differences
from jaxdrop.errors import JaxdropError

__all__ = ["LOCK_FILE", "MARKER_FILE", "RUN_FILES", "RunFolder", "open_run_folder"]

log = logging.getLogger("jaxdrop")

MARKER_FILE = ".jaxdrop-run.json"
LOCK_FILE = ".jaxdrop.lock"
_CONTROL = frozenset({MARKER_FILE, LOCK_FILE})

# The files a run writes at the top of its folder: the record (experiments.records.RunRecord), replay's
# replay.json, reproduce's report.md, benchmarks/bench.py's bench.json and bench.md, and every figure the
# experiments draw (experiments/e*.py; a test keeps this list complete). ``overwrite`` removes these names
# (as plain files or links) and record-failed-<time>.json, nothing else.
RUN_FILES = frozenset({"record.json", "replay.json", "report.md", "bench.json", "bench.md",
                       "curves.png", "losses.png", "published.png", "reliability.png", "size.png"})
_FAILED_RECORD = re.compile(r"record-failed-\d{8}-\d{6}\.json")
# Left behind by a process killed while writing: write_json's temporary files and the write probe.
_LITTER = re.compile(r"\.\.?[A-Za-z0-9._-]+\.json\.[a-z0-9_]+\.tmp|\.write-test(-[a-z0-9_]+)?")
CHECKPOINTS = "checkpoints"
# What jaxdrop.training.Checkpoints writes in checkpoints/<run>/ and checkpoints/<run>.corrupt/: orbax's step
# folders, a step being written, a step quarantined twice (<step>-<n>).
_STEP = re.compile(r"\d+(-\d+)?|\d+\.orbax-checkpoint-tmp.*")
_DEPTH = 32  # orbax's step folders are 4 deep; a deeper tree is not one of them and is kept


def _out_error(path: Path, error: OSError) -> JaxdropError | PermissionError:
  """The one-line error of an ``OSError`` met while creating, reading or writing the folder ``path``."""
  if error.errno == errno.ENAMETOOLONG:
    return ConfigError(f"--out {path} is longer than the file system allows ({error.strerror}); choose a"
                       " shorter --out.")
  return PermissionError(f"cannot write to output folder {path}: {error.strerror or error}; choose another"
                         " --out.")


def _kind_of_file(mode: int) -> str:
  if stat.S_ISLNK(mode):
    return "a symbolic link"
  if stat.S_ISDIR(mode):
    return "a folder"
  return "a plain file" if stat.S_ISREG(mode) else "a special file (not a plain file)"


def _lstat(path: Path) -> os.stat_result | None:
  try:
    return os.lstat(path)
  except FileNotFoundError:
    return None


def _plain_json(path: Path) -> Any:
  """The JSON in ``path`` if it is a plain file (never read through a link), else ``None``.

  Raises:
    OSError: it cannot be read.
    ValueError: it is not JSON, or is nested too deeply (one line).
  """
  st = _lstat(path)
  return read_json(path) if st is not None and stat.S_ISREG(st.st_mode) else None


def _damaged_marker(marker_path: Path, what: str) -> OutputMismatchError:
  return OutputMismatchError(f"the marker {marker_path} is damaged ({what}): jaxdrop cannot tell which run"
                             " the folder holds; choose another --out.")


def _read_marker(path: Path) -> dict[str, Any] | None:
  """The folder's marker, or what a record written before markers existed says; ``None`` if neither.

  Raises:
    OutputMismatchError: the marker is not a plain file, cannot be read, or
      does not hold a marker (a kind, options and environment of the right types).
  """
  marker_path = path / MARKER_FILE
  st = _lstat(marker_path)
  if st is not None:
    if not stat.S_ISREG(st.st_mode):
      raise _damaged_marker(marker_path, f"it is {_kind_of_file(st.st_mode)}")
    try:
      marker = _plain_json(marker_path)
    except (OSError, ValueError) as e:
      raise OutputMismatchError(f"the marker {marker_path} cannot be read ({e}); choose another --out.") \
          from e
    if not isinstance(marker, dict):
      raise _damaged_marker(marker_path, f"it holds a {type(marker).__name__}, not an object")
    short = lambda value: repr(value) if len(repr(value)) <= 40 else repr(value)[:37] + "..."
    if not isinstance(marker.get("kind"), str):
      raise _damaged_marker(marker_path, f"'kind' is {short(marker.get('kind'))}, not a name")
    for key in ("options", "environment"):
      if marker.get(key) is not None and not isinstance(marker[key], dict):
        raise _damaged_marker(marker_path, f"{key!r} is {short(marker[key])}, not an object")
    parts = marker.get("parts", [])
    if not (isinstance(parts, list) and all(isinstance(p, str) for p in parts)):
      raise _damaged_marker(marker_path, f"'parts' is {short(parts)}, not a list of folder names")
    return marker
  try:
    record = _plain_json(path / "record.json")
  except (OSError, ValueError):
    return None
  if (isinstance(record, dict) and isinstance(record.get("experiment"), str)
      and isinstance(record.get("environment"), dict)):  # a run from before markers: options unknown
    return {"kind": record["experiment"], "options": None, "environment": record["environment"]}
  return None


def _results(path: Path) -> set[str]:
  """The entries of ``path`` that hold results: all but the control files, what a killed write left
  behind, and a record of a run that failed before training anything (a missing data set), which the next
  attempt may replace."""
  held = {p.name for p in path.iterdir()} - _CONTROL
  held = {name for name in held if not _LITTER.fullmatch(name)}
  if "record.json" in held:
    try:
      record = _plain_json(path / "record.json")
    except (OSError, ValueError):
      return held
    if isinstance(record, dict) and record.get("status") == "failed" and not record.get("runs"):
      held.discard("record.json")
  return held


def _finished_without_checkpoints(path: Path) -> bool:
  try:
    record = _plain_json(path / "record.json")
  except (OSError, ValueError):
    return False
  return isinstance(record, dict) and record.get("status") == "ok" and not (path / CHECKPOINTS).is_dir()


def _enclosing_run(path: Path) -> Path | None:
  """The nearest folder above ``path`` (as given, or with links resolved) that holds a marker or a lock."""
  above = list(Path(os.path.abspath(path)).parents)  # "A/sub/.." is A, not inside it
  try:
    above += [p for p in path.resolve().parents if p not in above]
  except (OSError, RuntimeError):  # a loop of links: found again, and named, when the folder is created
    pass
  for folder in above:
    if any(os.path.lexists(folder / name) for name in _CONTROL):
      return folder
  return None


def _run_file(name: str) -> bool:
  return name in RUN_FILES or bool(_FAILED_RECORD.fullmatch(name))


def _in_the_way(path: Path, *, resume: bool) -> None:
  """Refuses a folder where the run would write a file through a link (``resume``) or onto something that
  is not a file (a folder named ``record.json``, say), before anything is changed.

  Raises:
    OutputExistsError: naming the entry and what to do.
  """
  for entry in sorted(path.iterdir()):
    st = os.lstat(entry)
    if entry.name == CHECKPOINTS:
      if not (stat.S_ISDIR(st.st_mode) or stat.S_ISLNK(st.st_mode)):  # a link: the user's folder elsewhere
        raise OutputExistsError(f"{entry} is {_kind_of_file(st.st_mode)}, where the run keeps its checkpoint"
                                " folders; move it away, or choose another --out.")
    elif _run_file(entry.name):
      if stat.S_ISLNK(st.st_mode) and resume:
        raise OutputExistsError(f"{entry} is a symbolic link (to {os.readlink(entry)}): the resumed run would"
                                " write through it; remove the link, or choose another --out.")
      if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
        raise OutputExistsError(f"{entry} is {_kind_of_file(st.st_mode)}, where the run writes a file of that"
                                " name; move it away, or choose another --out.")


def _open_folder(name: str | Path, dir_fd: int | None = None) -> int:
  """A file descriptor of the folder ``name``; ``OSError`` if it is a link (``ELOOP``) or no folder."""
  return os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)


def _remove_tree(parent_fd: int, name: str, where: str, kept: list[str], depth: int = 0) -> bool:
  """Removes ``name`` (in the folder ``parent_fd``) and all below it, never following a link.

  A folder that holds a marker or a lock is another run's: it stays, with all
  below it and the folders above it (their other entries go). Returns whether
  ``name`` is gone; what stayed is added to ``kept``.
  """
  if not stat.S_ISDIR(os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode):
    os.unlink(name, dir_fd=parent_fd)  # a file or a link: the name goes, what a link points to stays
    return True
  fd = _open_folder(name, parent_fd)
  try:
    names = os.listdir(fd)
    if _CONTROL & set(names):
      kept.append(f"{where} (another run's folder)")
      return False
    if depth >= _DEPTH:
      kept.append(f"{where} (deeper than a checkpoint)")
      return False
    gone = [_remove_tree(fd, entry, f"{where}/{entry}", kept, depth + 1) for entry in sorted(names)]
  finally:
    os.close(fd)
  if all(gone):
    os.rmdir(name, dir_fd=parent_fd)
  return all(gone)


def _clear_checkpoints(fd: int, where: str, kept: list[str]) -> None:
  """Removes from ``checkpoints/`` (open as ``fd``) the step folders :class:`~jaxdrop.training.Checkpoints`
  writes, and the run folders left empty."""
  for name in sorted(os.listdir(fd)):
    mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    if stat.S_ISLNK(mode):
      os.unlink(name, dir_fd=fd)
      continue
    if not stat.S_ISDIR(mode):
      kept.append(f"{where}/{name}")
      continue
    run_fd = _open_folder(name, fd)
    try:
      entries = sorted(os.listdir(run_fd))
      if _CONTROL & set(entries):
        kept.append(f"{where}/{name} (another run's folder)")
        continue
      for entry in entries:
        if _STEP.fullmatch(entry):
          _remove_tree(run_fd, entry, f"{where}/{name}/{entry}", kept)
        else:
          kept.append(f"{where}/{name}/{entry}")
      empty = not os.listdir(run_fd)
    finally:
      os.close(run_fd)
    if empty:
      os.rmdir(name, dir_fd=fd)


def _clear_run(fd: int, where: str, kept: list[str], parts: frozenset[str]) -> None:
  """Removes, from the folder open as ``fd``, the files a run wrote there, its checkpoints and the folders of
  ``parts`` (cleared the same way); reports in ``kept`` what stayed inside what it cleared."""
  for name in sorted(os.listdir(fd)):
    mode = os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode
    inside = f"{where}/{name}" if where else name
    if _run_file(name) or _LITTER.fullmatch(name):
      if stat.S_ISREG(mode) or stat.S_ISLNK(mode):
        os.unlink(name, dir_fd=fd)
      continue
    if name != CHECKPOINTS and name not in parts:
      continue  # not the run's: stays, unreported at the top (it was never the run's to remove)
    if stat.S_ISLNK(mode):
      os.unlink(name, dir_fd=fd)
      continue
    if not stat.S_ISDIR(mode):
      continue
    sub_fd = _open_folder(name, fd)
    try:
      if _CONTROL & set(os.listdir(sub_fd)):
        kept.append(f"{inside} (another run's folder)")
        continue
      if name == CHECKPOINTS:
        _clear_checkpoints(sub_fd, inside, kept)
      else:
        _clear_run(sub_fd, inside, kept, frozenset())
        left = [f"{inside}/{entry}" for entry in sorted(os.listdir(sub_fd))]
        kept += [entry for entry in left if not any(k.startswith(f"{entry}/") for k in kept)]  # named once
      empty = not os.listdir(sub_fd)
    finally:
      os.close(sub_fd)
    if empty:
      os.rmdir(name, dir_fd=fd)


def _overwrite(path: Path, parts: frozenset[str]) -> list[str]:
  """Removes the earlier run's files from ``path`` and from its ``parts``' folders; returns what stayed inside
  what it cleared."""
  kept: list[str] = []
  fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # it may be a link; nothing below it is
  try:
    _clear_run(fd, "", kept, parts)
  finally:
    os.close(fd)
  if kept:
    log.warning("--overwrite kept what the earlier run in %s did not write: %s", path,
                ", ".join(kept[:5]) + (f" and {len(kept) - 5} more" if len(kept) > 5 else ""))
  return kept


def _option_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
  keys = sorted(set(saved) | set(now))
  return [f"{flag(k)}: the run has {saved.get(k)!r}, now {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]


class RunFolder:
  """An output folder that this process holds the lock of (see :func:`open_run_folder`).

  ``kept`` lists what ``overwrite`` left inside what it cleared (another run's
  folder, a file the run did not write), relative to ``path``.
  """

  def __init__(self, path: Path, lock_fd: int, *, created: bool, fresh: bool, kept: list[str] | None = None):
    self.path = path
    self._lock_fd: int | None = lock_fd
    self._created = created  # the folder did not exist
    self._fresh = fresh  # it held no run: this one wrote the marker
    self.kept = kept or []

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
  """Takes the folder's exclusive lock, or raises :class:`OutputInUseError` naming the holder.

  The lock file is opened without following a link and written only once it
  is known to be a plain file with no other name, so that a link or a hard link
  planted there never lets a run overwrite another file.

  Raises:
    OutputExistsError: the lock file is a link, a folder or a special file, or
      has other names.
    OutputInUseError: another process holds the lock.
  """
  import fcntl

  lock_path = path / LOCK_FILE
  flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
  try:
    fd = os.open(lock_path, flags, 0o664)
  except OSError as e:
    if e.errno not in (errno.ELOOP, errno.EISDIR, errno.ENXIO):
      raise
    st = _lstat(lock_path)
    what = _kind_of_file(st.st_mode) if st is not None else "not a plain file"
    target = f" to {os.readlink(lock_path)}" if st is not None and stat.S_ISLNK(st.st_mode) else ""
    raise OutputExistsError(f"the lock file {lock_path} is {what}{target}, not jaxdrop's lock; remove it, or"
                            " choose another --out.") from None
  try:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
      raise OutputExistsError(f"the lock file {lock_path} is {_kind_of_file(st.st_mode)}, not jaxdrop's lock;"
                              " remove it, or choose another --out.")
    if st.st_nlink != 1:
      raise OutputExistsError(f"the lock file {lock_path} has {st.st_nlink - 1} other name(s) (a hard link):"
                              " jaxdrop writes into its lock; remove it, or choose another --out.")
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
      if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
        raise
      holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
      raise OutputInUseError(
          f"output folder {path} is in use by another jaxdrop process ({holder}); wait for it to end, or"
          " choose another --out."
      ) from None
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {stamp}\n".encode(), 0)
  except BaseException:
    os.close(fd)
    raise
  return fd


def _check_environment(path: Path, recorded: dict[str, Any] | None, now: dict[str, Any] | None) -> None:
  diffs = [] if recorded is None or now is None else environment_differences(recorded, now)
  if diffs:
    raise OutputMismatchError(
        f"--resume: the run in {path} was started under another environment ({'; '.join(diffs)}): its remaining"
        " steps would not draw the bits its first ones did; resume it where it started, or start a new run in"
        " another --out."
    )


def _write_marker(path: Path, kind: str, options: dict[str, Any] | None,
                  environment: dict[str, Any] | None, parts: list[str]) -> None:
  stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
  # write_json renames a new file over the old name: a link there is replaced, never written through.
  write_json(path / MARKER_FILE, {"written_by": "jaxdrop", "kind": kind, "options": options, "created": stamp,
                                  "environment": environment, "parts": parts})


def _probe(path: Path) -> None:
  """Writes and removes a file of a fresh name (``O_EXCL``: never through a link): the folder is writable."""
  fd, name = tempfile.mkstemp(dir=path, prefix=".write-test-")
  os.close(fd)
  os.unlink(name)


def _check_out(path: Path) -> bool:
  """Checks ``--out`` before anything is made; returns whether the folder exists.

  Raises:
    ConfigError: a file, a link to nothing, or a folder inside another run's folder.
    OutputExistsError: a folder holding files that jaxdrop did not write.
    OSError: ``path`` cannot be looked at.
  """
  if path.exists() and not path.is_dir():
    raise ConfigError(f"--out {path} is a file, not a folder; give a folder path (it is created when missing).")
  if path.is_symlink() and not path.exists():
    raise ConfigError(f"--out {path} is a symbolic link to {os.readlink(path)}, which does not exist; create"
                      " that folder, or choose another --out.")
  if (outer := _enclosing_run(path)) is not None:
    raise OutputExistsError(f"--out {path} is inside the run folder {outer} (it holds {MARKER_FILE} or"
                            f" {LOCK_FILE}): a run never goes inside another, whose --overwrite would remove"
                            " it; choose an --out outside it.")
  return path.exists()


def open_run_folder(
    path: str | os.PathLike,
    *,
    kind: str,
    options: dict[str, Any] | None = None,
    overwrite: bool = False,
    resume: bool = False,
    environment: dict[str, Any] | None = None,
    parts: Iterable[str] = (),
) -> RunFolder:
  """Creates (or reopens) a run's output folder and locks it for this process.

  Args:
    path: the folder (created with its parents when missing).
    kind: what runs there: an experiment's name, ``"reproduce"``, ``"replay"`` or ``"bench"``.
    options: the options that decide the run's result (JSON-ready); a resumed
      run must have the same (``None``: not compared).
    overwrite: replace the results of an earlier run of the folder.
    resume: continue the run the folder holds.
    environment: this process's ``experiments.records.environment()``; kept in
      the marker, and a resumed run must have the same pinned facts.
    parts: the subfolders that runs of this kind write, each a run's folder of
      its own (reproduce's parts, and a replay of a reproduce folder's). The
      caller, who knows what its run writes, names them; the marker keeps
      them, and ``overwrite`` clears those of the earlier run and this one's
      as it clears the folder.

  Returns:
    A :class:`RunFolder`; call ``release()`` (or use it as a context manager)
    when done, ``abandon()`` if nothing was written.

  Raises:
    ConfigError: both flags; ``path`` is a file, a link to nothing, or longer
      than the file system allows.
    OutputExistsError: the folder holds files and no flag says what to do
      with them; ``overwrite`` or ``resume`` on a folder jaxdrop did not
      write; ``path`` inside another run's folder; a link, a hard link or a
      folder where the lock goes, or something that is not a file where the
      run writes one (and, for ``resume``, a link there).
    OutputMismatchError: ``resume`` on a run of another kind, options or
      environment; a marker that cannot be read or is damaged (``parts`` not
      a list of names, say).
    OutputInUseError: another process holds the folder.
    PermissionError: the folder cannot be created, read or written.
  """
  path = Path(path)
  options = None if options is None else json.loads(json.dumps(options))  # tuples become lists, as in the marker
  parts = sorted(set(parts))
  if overwrite and resume:
    raise ConfigError("--overwrite starts afresh and --resume continues; pass only one of them.")
  try:
    created = not _check_out(path)
  except JaxdropError:  # OutputExistsError is an OSError too
    raise
  except OSError as e:
    raise _out_error(path, e) from e
  if not created:
    try:
      held = {p.name for p in path.iterdir() if not _LITTER.fullmatch(p.name)} - _CONTROL
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
  except JaxdropError:
    raise
  except OSError as e:
    raise _out_error(path, e) from e
  kept: list[str] = []
  try:
    marker = _read_marker(path)
    held = _results(path)
    if marker is not None and (held or resume):
      if resume:
        if marker["kind"] != kind:
          raise OutputMismatchError(
              f"--resume: output folder {path} holds a run of {marker['kind']}, not {kind}; resume it with"
              f" `python -m experiments run {marker['kind']} --resume`, or choose another --out for {kind}."
          )
        diffs = ([] if marker.get("options") is None or options is None
                 else _option_differences(marker["options"], options))
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
        _in_the_way(path, resume=True)
      elif overwrite:
        _in_the_way(path, resume=False)
        kept = _overwrite(path, frozenset(parts) | frozenset(marker.get("parts", [])))
      else:
        raise OutputExistsError(
            f"output folder {path} already holds a run; choose another --out, pass --resume to continue it"
            " from its checkpoints, or --overwrite to replace it."
        )
    fresh = marker is None or overwrite or not held
    if fresh:
      _write_marker(path, kind, options, environment, parts)
    _probe(path)
  except JaxdropError:
    os.close(lock_fd)
    raise
  except OSError as e:
    os.close(lock_fd)
    raise PermissionError(f"cannot write to output folder {path}: {e.strerror or e}; choose another --out.") from e
  except BaseException:
    os.close(lock_fd)
    raise
  return RunFolder(path, lock_fd, created=created, fresh=fresh, kept=kept)

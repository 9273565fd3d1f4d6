"""Crash-safe training checkpoints with orbax.

Each checkpoint is an orbax step folder holding the train state (parameters,
optimizer state, step) and a JSON ``meta`` item: where in the run it was
taken (epoch, step within the epoch), the history so far, the SHA-256 of the
whole train state and of that progress, every leaf's shape, and the
fingerprint of the run's configuration. (The random streams need no saving:
dropout masks and shuffles are pure functions of the seed, which the
fingerprint holds, and of the step, which the state holds.) Orbax writes a step
into a temporary folder and renames it when complete, so a run killed while
saving leaves the previous checkpoints intact and the half-written one is
never listed.

The ``meta`` item holds the SHA-256 of its own other fields, and beside the
two items a small ``jaxdrop-files.json`` lists the size and SHA-256 of every
file of the state (written once orbax has finished the step; a step saved
before these existed is read as before).

On restore, the ``meta`` item is read and checked against its hash, then the
configuration and the shapes are compared: a checkpoint written under another
configuration, or for parameters of other shapes, is refused
(:class:`CheckpointMismatchError`, naming the difference) and left where it
is. Then the state's files are checked against their list, the state is read
and its hash checked. A checkpoint that fails any of these (or that is a link
or a file where a step folder belongs, which orbax is never let near) is moved
aside (``<dir>.corrupt/<step>``, never deleted nor written over) with a warning
and the previous one is tried. A folder whose checkpoints were all moved aside
never restarts from step 0.

Example::

  ckpt = Checkpoints("runs/e2/checkpoints/concise", every_steps=100, fingerprint={"lr": 0.5})
  restored = ckpt.restore_latest(state)  # None: nothing saved yet
  ckpt.save(state, {"epoch": 1, "epoch_step": 100})
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdrop.errors import CheckpointError, CheckpointMismatchError
from jaxdrop.training._optional import optional_import

__all__ = ["Checkpoints", "param_sha256"]

log = logging.getLogger("jaxdrop")

FILES = "jaxdrop-files.json"  # in a step folder: {"state": {path: [size, sha256]}, "sha256": of that listing}


def param_sha256(tree: Any) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes, in tree order.

  Two trees have the same hash exactly when they are bitwise equal (with the
  same structure), so the hash of a run's parameters identifies its result.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdrop.training import param_sha256
    >>> param_sha256({"w": jnp.zeros(2)}) == param_sha256({"w": jnp.zeros(2)})
    True
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
    array = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _json_ready(tree: Any) -> Any:
  """``tree`` with NumPy and JAX scalars/arrays turned into Python numbers and lists."""
  return jax.tree.map(lambda v: v.tolist() if hasattr(v, "tolist") else v, tree)


def _json_sha256(obj: Any) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _shapes(state: Any) -> dict[str, list[int]]:
  """``{leaf path: shape}`` of a train state, as saved in JSON."""
  leaves = jax.tree_util.tree_flatten_with_path(state)[0]
  return {jax.tree_util.keystr(path): list(np.shape(leaf)) for path, leaf in leaves}


def _dtypes(state: Any) -> dict[str, str]:
  return {jax.tree_util.keystr(path): str(np.asarray(leaf).dtype)
          for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]}


def _as_saved(state: Any, dtypes: dict[str, str]) -> Any:
  """``state`` with each leaf in the dtype it was saved in (a target may hold a step as int64, say)."""
  def cast(path, leaf):
    leaf = np.asarray(leaf)
    return leaf.astype(jax.numpy.dtype(dtypes.get(jax.tree_util.keystr(path), leaf.dtype)))

  return jax.tree_util.tree_map_with_path(cast, state)


def _meta_problem(meta: Any) -> str | None:
  """What is wrong with a checkpoint's ``meta`` item before any of it is believed, or ``None``.

  Its hash (saved since jaxdrop hashed the meta item) covers the fingerprint,
  shapes and dtypes, so a flipped bit there reads as corruption, not as another
  configuration; an older item is checked for the types it must have.
  """
  if not isinstance(meta, dict) or not isinstance(meta.get("progress"), dict):
    return "its meta item has no progress"
  if "meta_sha256" in meta:
    rest = {k: v for k, v in meta.items() if k != "meta_sha256"}
    if meta["meta_sha256"] != _json_sha256(rest):
      return "its meta item does not match the hash saved with it"
    return None
  for key, types in (("fingerprint", dict), ("shapes", (dict, type(None))), ("dtypes", dict)):
    if key in meta and not isinstance(meta[key], types):
      return f"its meta item's {key} is a {type(meta[key]).__name__}"
  return None


def _file_sha256(path: Path) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def _state_files(step_dir: Path) -> dict[str, list]:
  """``{path inside the step: [size, sha256]}`` of every file of the state item (links are not followed)."""
  files = {}
  for root, dirs, names in os.walk(step_dir / "state"):
    for name in names + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
      path = Path(root, name)
      mode = os.lstat(path).st_mode
      files[path.relative_to(step_dir).as_posix()] = (
          [os.lstat(path).st_size, _file_sha256(path)] if stat.S_ISREG(mode) else
          ["link", os.readlink(path)] if stat.S_ISLNK(mode) else ["special", stat.S_IFMT(mode)])
  return files


def _write_file_list(step_dir: Path) -> None:
  """Lists the state's files beside it, through a temporary file and a rename."""
  files = _state_files(step_dir)
  tmp = step_dir / f".{FILES}.tmp"
  tmp.write_text(json.dumps({"state": files, "sha256": _json_sha256(files)}))
  os.replace(tmp, step_dir / FILES)


def _files_problem(step_dir: Path) -> str | None:
  """What differs between the state's files and their list, or ``None`` (also when there is no usable list: a
  step saved before the lists, or killed before its list was written, is checked by its hashes alone)."""
  try:
    listed = json.loads((step_dir / FILES).read_text())
  except (OSError, ValueError, RecursionError):
    return None
  if (not isinstance(listed, dict) or not isinstance(listed.get("state"), dict)
      or listed.get("sha256") != _json_sha256(listed["state"])):
    return None
  found = _state_files(step_dir)
  for name, (size, sha) in sorted(listed["state"].items()):
    if name not in found:
      return f"its file {name} is missing"
    if found[name] != [size, sha]:
      return f"its file {name} is not the one saved ({found[name][0]} bytes, {size} saved)"
  return None


def _hash_problem(meta: dict[str, Any], state: Any) -> str | None:
  """What does not match the hashes saved in ``meta``, or ``None``."""
  if "state_sha256" not in meta:  # written by jaxdrop before the whole state was hashed
    ok = meta.get("params_sha256") == param_sha256(state.params)
    return None if ok else "the parameters do not match the hash saved with them"
  if meta["state_sha256"] != param_sha256(_as_saved(state, meta.get("dtypes", {}))):
    return "the train state does not match the hash saved with it"
  if meta.get("progress_sha256") != _json_sha256(meta["progress"]):
    return "the progress does not match the hash saved with it"
  return None


class Checkpoints:
  """The checkpoints of one training run in ``directory``.

  Args:
    directory: the run's checkpoint folder (created on the first save).
    every_steps: save every this many optimizer steps (0: only when asked,
      e.g. at the end).
    fingerprint: the configuration that determines the run's result; a
      checkpoint written with another fingerprint is refused on restore.
    keep: how many of the newest checkpoints to keep.
  """

  def __init__(self, directory: str | Path, *, every_steps: int = 0,
               fingerprint: dict[str, Any] | None = None,
               keep: int = 3):
    if every_steps < 0:
      raise ValueError(f"every_steps must be >= 0, got {every_steps}.")
    self.directory = Path(directory).absolute()
    self.every_steps = every_steps
    self.fingerprint = json.loads(json.dumps(_json_ready(fingerprint or {})))  # tuples become lists, as saved
    self.keep = keep
    self._manager = None

  def _open(self):
    ocp = optional_import("orbax.checkpoint")

    if self._manager is None:
      options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, enable_async_checkpointing=False,
                                             create=True)
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    return self._manager

  def _close(self):
    if self._manager is not None:
      self._manager.close()
      self._manager = None

  def due(self, step: int) -> bool:
    """Whether a periodic checkpoint falls on global step ``step``."""
    return self.every_steps > 0 and step > 0 and step % self.every_steps == 0

  def _check_directory(self) -> None:
    """Raises :class:`CheckpointError` if ``directory``, or a folder above it, is not a folder (a file, a link
    to nothing)."""
    for path in (self.directory, *self.directory.parents):
      if path.is_dir():
        return
      if path.exists() or path.is_symlink():
        what = "a file" if path.exists() else f"a symbolic link to {os.readlink(path)}, which does not exist"
        raise CheckpointError(
            f"{path} is {what}, not a folder, so the checkpoints of"
            f" Checkpoints(directory={str(self.directory)!r}) cannot be kept there; move it away, or give"
            " Checkpoints another directory.", directory=self.directory, fix=("directory",)
        )

  def _sweep(self) -> None:
    """Moves aside, unopened, what stands where a step folder belongs but is not one (a link, a file):
    orbax would read and write through a link, and fail on a file."""
    if not self.directory.is_dir():
      return
    for entry in sorted(self.directory.iterdir()):
      if entry.name.isdigit() and (entry.is_symlink() or not entry.is_dir()):
        what = f"a symbolic link to {os.readlink(entry)}" if entry.is_symlink() else "a file"
        self._quarantine(int(entry.name), ValueError(f"it is {what}, not a step folder written here"))

  def steps(self) -> list[int]:
    """The steps of the complete checkpoints, oldest first.

    Raises:
      CheckpointError: ``directory`` (or a folder above it) is a file.
    """
    self._check_directory()
    if not self.directory.exists():
      return []
    return sorted(self._open().all_steps())

  def save(self, state, progress: dict[str, Any]) -> None:
    """Writes ``state`` and ``progress`` as the checkpoint of ``state.step`` (atomically).

    Raises:
      CheckpointError: ``directory`` (or a folder above it) is a file.
    """
    ocp = optional_import("orbax.checkpoint")

    step = int(jax.device_get(jax.numpy.max(state.step)))
    self._check_directory()
    self._sweep()
    if step in self.steps():
      return
    progress = _json_ready(progress)
    meta = {"progress": progress, "state_sha256": param_sha256(state),
            "progress_sha256": _json_sha256(progress), "shapes": _shapes(state), "dtypes": _dtypes(state),
            "fingerprint": self.fingerprint}
    meta = json.loads(json.dumps(meta))  # as it reads back, so that its hash is the one restore computes
    meta["meta_sha256"] = _json_sha256(meta)
    manager = self._open()
    saved = ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta))
    manager.save(step, args=saved)
    manager.wait_until_finished()
    if jax.process_index() == 0:
      _write_file_list(self.directory / str(step))

  def restore_latest(self, target) -> tuple[Any, dict[str, Any]] | None:
    """The newest good checkpoint as ``(state, progress)``, or ``None`` if there is none.

    Args:
      target: a state of the run's structure, shapes and dtypes.

    Raises:
      CheckpointMismatchError: the newest readable checkpoint comes from a
        different configuration, or holds arrays of other shapes.
      CheckpointError: checkpoints exist (or existed) but none of them can be
        read; or ``directory`` is a file.
    """
    ocp = optional_import("orbax.checkpoint")

    tried = []
    self._check_directory()
    self._sweep()
    while steps := self.steps():
      step = steps[-1]
      try:
        meta = self._open().restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if problem := _meta_problem(meta):
          raise ValueError(problem)
      except Exception as e:  # noqa: BLE001 (orbax/tensorstore raise many types for unreadable data)
        tried.append(step)
        self._quarantine(step, e)
        continue
      self._check_fingerprint(meta.get("fingerprint", {}), step)
      self._check_shapes(meta.get("shapes"), _shapes(target), step)
      # Files checked before orbax reads them: a read that fails part-way leaves tensorstore's other reads
      # calling back into the event loop orbax has closed, each printing a traceback.
      if problem := _files_problem(self.directory / str(step)):
        tried.append(step)
        self._quarantine(step, ValueError(problem))
        continue
      try:
        wanted = ocp.args.Composite(state=ocp.args.StandardRestore(target))
        state = self._open().restore(step, args=wanted).state
      except Exception as e:  # noqa: BLE001 (as above)
        tried.append(step)
        self._quarantine(step, e)
        continue
      if problem := _hash_problem(meta, state):
        tried.append(step)
        self._quarantine(step, ValueError(problem))
        continue
      return state, meta["progress"]
    if tried or self._quarantined():
      raise CheckpointError(
          f"no readable checkpoint left in {self.directory}: step(s) {tried or self._quarantined()} were"
          f" corrupt and moved to {self._corrupt_dir()}; start a fresh run (resume=False) in another"
          " checkpoint directory.", directory=self.directory, fix=("resume", "directory"),
      )
    return None

  def _corrupt_dirs(self) -> list[Path]:
    """The folders that hold this directory's quarantined steps: ``<dir>.corrupt``, or
    ``<dir>.corrupt-<n>`` where something else had that name."""
    base = self.directory.name + ".corrupt"
    found = [p for p in self.directory.parent.glob(base + "*") if p.name == base or
             (p.name[len(base):].startswith("-") and p.name[len(base) + 1:].isdigit())]
    return sorted((p for p in found if p.is_dir() and not p.is_symlink()), key=lambda p: len(p.name))

  def _quarantined(self) -> list[str]:
    return sorted(p.name for corrupt in self._corrupt_dirs() for p in corrupt.iterdir())

  def _corrupt_dir(self) -> Path:
    """Where quarantined steps go: the first of ``<dir>.corrupt``, ``<dir>.corrupt-1``, ... that is a
    folder of its own or is free (never a file or a link someone else put there)."""
    n = 0
    while True:
      path = self.directory.with_name(self.directory.name + ".corrupt" + (f"-{n}" if n else ""))
      if not (path.exists() or path.is_symlink()) or (path.is_dir() and not path.is_symlink()):
        return path
      n += 1

  def _quarantine(self, step: int, error: Exception) -> None:
    """Moves an unreadable checkpoint out of orbax's sight, keeping its files (a link moves, unfollowed)."""
    self._close()
    corrupt = self._corrupt_dir()
    dest = corrupt / str(step)
    n = 1
    while dest.exists() or dest.is_symlink():
      dest, n = corrupt / f"{step}-{n}", n + 1
    corrupt.mkdir(parents=True, exist_ok=True)
    shutil.move(str(self.directory / str(step)), str(dest))  # dest is free: a rename (a link: the link)
    log.warning("checkpoint at step %d in %s is unreadable (%s: %s); moved it to %s and trying the previous"
                " one",
                step, self.directory, type(error).__name__, (str(error).splitlines() or [""])[0][:200], dest)

  def _check_shapes(self, saved: dict[str, list[int]] | None, now: dict[str, list[int]], step: int) -> None:
    if saved is None or saved == now:  # None: written before shapes were saved
      return
    diffs = [f"{k}: checkpoint {saved.get(k, 'absent')}, now {now.get(k, 'absent')}"
             for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    raise CheckpointMismatchError(
        f"the checkpoint at step {step} in {self.directory} holds arrays of other shapes than this run's"
        " model"
        f" ({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}): an option that sizes the model or the"
        " number of seeds differs; resume with the run's options, or start a fresh run (resume=False) in"
        " another checkpoint directory.", directory=self.directory, fix=("resume", "directory"), step=step,
    )

  def _check_fingerprint(self, saved: dict[str, Any], step: int) -> None:
    if saved == self.fingerprint:
      return
    keys = sorted(set(saved) | set(self.fingerprint))
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {self.fingerprint.get(k)!r}" for k in keys
             if saved.get(k) != self.fingerprint.get(k)]
    raise CheckpointMismatchError(
        f"the checkpoint at step {step} in {self.directory} was written by a run with a different"
        f" configuration ({'; '.join(diffs)}); resume with the same options, or start a fresh run"
        " (resume=False) in another checkpoint directory.", directory=self.directory,
        fix=("resume", "directory"), step=step,
    )

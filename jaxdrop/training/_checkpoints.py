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

On restore, the configuration and the shapes are compared first, from the
small ``meta`` item: a checkpoint written under another configuration, or for
parameters of other shapes, is refused (:class:`CheckpointMismatchError`,
naming the difference) and left where it is. Then the state is read and its
hash checked; a checkpoint that cannot be read or does not match its hash is
moved aside (``<dir>.corrupt/<step>``, never deleted) with a warning and the
previous one is tried. A folder whose checkpoints were all moved aside never
restarts from step 0.

Example::

  ckpt = Checkpoints("runs/e2/checkpoints/concise", every_steps=100, fingerprint={"lr": 0.5})
  restored = ckpt.restore_latest(state)  # None: nothing saved yet
  ckpt.save(state, {"epoch": 1, "epoch_step": 100})
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxdrop.errors import CheckpointError, CheckpointMismatchError
from jaxdrop.training._optional import optional_import

__all__ = ["Checkpoints", "param_sha256"]

log = logging.getLogger("jaxdrop")


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

  def __init__(self, directory: str | Path, *, every_steps: int = 0, fingerprint: dict[str, Any] | None = None,
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
      options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, enable_async_checkpointing=False, create=True)
      self._manager = ocp.CheckpointManager(self.directory, options=options)
    return self._manager

  def _close(self):
    if self._manager is not None:
      self._manager.close()
      self._manager = None

  def due(self, step: int) -> bool:
    """Whether a periodic checkpoint falls on global step ``step``."""
    return self.every_steps > 0 and step > 0 and step % self.every_steps == 0

  def steps(self) -> list[int]:
    """The steps of the complete checkpoints, oldest first."""
    if not self.directory.exists():
      return []
    return sorted(self._open().all_steps())

  def save(self, state, progress: dict[str, Any]) -> None:
    """Writes ``state`` and ``progress`` as the checkpoint of ``state.step`` (atomically)."""
    ocp = optional_import("orbax.checkpoint")

    step = int(jax.device_get(jax.numpy.max(state.step)))
    if step in self.steps():
      return
    progress = _json_ready(progress)
    meta = {"progress": progress, "state_sha256": param_sha256(state), "progress_sha256": _json_sha256(progress),
            "shapes": _shapes(state), "dtypes": _dtypes(state), "fingerprint": self.fingerprint}
    manager = self._open()
    manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
    manager.wait_until_finished()

  def restore_latest(self, target) -> tuple[Any, dict[str, Any]] | None:
    """The newest good checkpoint as ``(state, progress)``, or ``None`` if there is none.

    Args:
      target: a state of the run's structure, shapes and dtypes.

    Raises:
      CheckpointMismatchError: the newest readable checkpoint comes from a
        different configuration, or holds arrays of other shapes.
      CheckpointError: checkpoints exist (or existed) but none of them can be
        read.
    """
    ocp = optional_import("orbax.checkpoint")

    tried = []
    while steps := self.steps():
      step = steps[-1]
      try:
        meta = self._open().restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta
        if not isinstance(meta, dict) or "progress" not in meta:
          raise ValueError("its meta item has no progress")
      except Exception as e:  # orbax/tensorstore raise many types for unreadable data
        tried.append(step)
        self._quarantine(step, e)
        continue
      self._check_fingerprint(meta.get("fingerprint", {}), step)
      self._check_shapes(meta.get("shapes"), _shapes(target), step)
      try:
        state = self._open().restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(target))).state
      except Exception as e:
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
          f"no readable checkpoint left in {self.directory}: step(s) {tried or self._quarantined()} were corrupt and"
          f" moved to {self._corrupt_dir()}; start a fresh run (without --resume) in another --out folder."
      )
    return None

  def _quarantined(self) -> list[str]:
    corrupt = self._corrupt_dir()
    return sorted(p.name for p in corrupt.iterdir()) if corrupt.is_dir() else []

  def _corrupt_dir(self) -> Path:
    return self.directory.with_name(self.directory.name + ".corrupt")

  def _quarantine(self, step: int, error: Exception) -> None:
    """Moves an unreadable checkpoint out of orbax's sight, keeping its files."""
    self._close()
    dest = self._corrupt_dir() / str(step)
    n = 1
    while dest.exists():
      dest, n = self._corrupt_dir() / f"{step}-{n}", n + 1
    dest.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(self.directory / str(step)), str(dest))
    log.warning("checkpoint at step %d in %s is unreadable (%s: %s); moved it to %s and trying the previous one",
                step, self.directory, type(error).__name__, str(error).splitlines()[0][:200], dest)

  def _check_shapes(self, saved: dict[str, list[int]] | None, now: dict[str, list[int]], step: int) -> None:
    if saved is None or saved == now:  # None: written before shapes were saved
      return
    diffs = [f"{k}: checkpoint {saved.get(k, 'absent')}, now {now.get(k, 'absent')}"
             for k in sorted(set(saved) | set(now)) if saved.get(k) != now.get(k)]
    raise CheckpointMismatchError(
        f"the checkpoint at step {step} in {self.directory} holds arrays of other shapes than this run's model"
        f" ({'; '.join(diffs[:3])}{'; ...' if len(diffs) > 3 else ''}): an option that sizes the model or the"
        " number of seeds differs; resume with the run's options, or start a fresh run in another --out folder."
    )

  def _check_fingerprint(self, saved: dict[str, Any], step: int) -> None:
    if saved == self.fingerprint:
      return
    keys = sorted(set(saved) | set(self.fingerprint))
    diffs = [f"{k}: checkpoint {saved.get(k)!r}, now {self.fingerprint.get(k)!r}" for k in keys
             if saved.get(k) != self.fingerprint.get(k)]
    raise CheckpointMismatchError(
        f"the checkpoint at step {step} in {self.directory} was written by a run with a different configuration"
        f" ({'; '.join(diffs)}); resume with the same options, or start a fresh run in another --out folder."
    )

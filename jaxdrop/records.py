"""What a run leaves behind: ``record.json`` written atomically, and the facts it holds."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["environment", "param_sha256", "write_json"]


def param_sha256(params: Any) -> str:
  """SHA-256 over every leaf's path, dtype, shape and bytes, in tree order.

  Two parameter trees have the same hash exactly when they are bitwise equal
  (with the same structure), so it identifies a run's result.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdrop.records import param_sha256
    >>> param_sha256({"w": jnp.zeros(2)}) == param_sha256({"w": jnp.zeros(2)})
    True
  """
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    array = np.ascontiguousarray(np.asarray(leaf))
    digest.update(f"{jax.tree_util.keystr(path)}:{array.dtype}:{array.shape};".encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def environment() -> dict[str, Any]:
  """Library versions and the device the run used."""
  import flax
  import jaxlib
  import optax

  device = jax.devices()[0]
  return {
      "python": platform.python_version(),
      "jax": jax.__version__,
      "jaxlib": jaxlib.__version__,
      "flax": flax.__version__,
      "optax": optax.__version__,
      "backend": jax.default_backend(),
      "device_kind": device.device_kind,
      "device_count": jax.device_count(),
      "machine": platform.machine(),
  }


def _default(obj):
  if isinstance(obj, (np.floating, np.integer)):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, Path):
    return str(obj)
  raise TypeError(f"not JSON serializable: {type(obj).__name__}")


def _umask() -> int:
  mask = os.umask(0o022)
  os.umask(mask)
  return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
  """Writes ``obj`` as JSON through a temporary file and an atomic rename.

  A crash leaves either the old file or the new one, never half of one.
  """
  path = Path(path)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
  try:
    os.fchmod(fd, 0o666 & ~_umask())  # mkstemp's 0600 would hide the record from the group
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, default=_default, allow_nan=True)
      f.write("\n")
      f.flush()
      os.fsync(f.fileno())
    os.replace(tmp, path)
  except BaseException:
    Path(tmp).unlink(missing_ok=True)
    raise

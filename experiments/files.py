"""JSON files that a crash never leaves half-written, and reading them back in one-line errors."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_json", "write_json"]


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


def read_json(path: str | os.PathLike) -> Any:
  """The JSON value in ``path``.

  Raises:
    FileNotFoundError: ``path`` does not exist.
    OSError: it cannot be read.
    ValueError: it is not JSON, or is nested too deeply to parse (a hostile or
      damaged file); the message is one line.
  """
  text = Path(path).read_text()
  try:
    return json.loads(text)
  except RecursionError:
    raise ValueError("its JSON is nested too deeply to be a jaxdrop file") from None

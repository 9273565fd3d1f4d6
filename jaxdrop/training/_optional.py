"""The engine's optional dependencies (the ``training`` extra), imported when first used."""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = ["optional_import"]


def optional_import(name: str) -> ModuleType:
  """``import name``; a missing module is an ``ImportError`` that says which extra installs it.

  Example:
    >>> optional_import("json").__name__
    'json'
  """
  try:
    return importlib.import_module(name)
  except ModuleNotFoundError as e:
    raise ImportError(f"jaxdrop.training needs {name.split('.')[0]} ({e}); install the engine's extra:"
                      " pip install 'jaxdrop[training]'.") from e

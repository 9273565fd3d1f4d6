""":mod:`jaxdrop.xla_cpu` under the engine's name: ``jaxdrop.training.xla_cpu is jaxdrop.xla_cpu``.

The kernels and the engine's choices live in :mod:`jaxdrop.xla_cpu` (importable without the ``training``
extra); importing this module gives that module object, so ``from jaxdrop.training.xla_cpu import max_pool``
and ``jaxdrop.training.xla_cpu.choose_path`` keep working, and monkeypatching either name patches both.
"""

from __future__ import annotations

import sys

from jaxdrop import xla_cpu as _home

# The names, for static tools, which do not follow the sys.modules entry below.
from jaxdrop.xla_cpu import CPU_CONV_COMPILER_OPTIONS as CPU_CONV_COMPILER_OPTIONS
from jaxdrop.xla_cpu import choose_compiler_options as choose_compiler_options
from jaxdrop.xla_cpu import choose_path as choose_path
from jaxdrop.xla_cpu import compiler_options_for as compiler_options_for
from jaxdrop.xla_cpu import conv_general_dilated as conv_general_dilated
from jaxdrop.xla_cpu import convolves_on_cpu as convolves_on_cpu
from jaxdrop.xla_cpu import max_pool as max_pool
from jaxdrop.xla_cpu import path_for as path_for

__all__ = _home.__all__

sys.modules[__name__] = _home  # the import statement returns (and binds) the module in sys.modules

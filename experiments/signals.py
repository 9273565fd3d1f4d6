"""Ctrl-C and SIGTERM stop a run at its next step boundary, with a checkpoint; a second one stops it at once.

A handler that raises wherever the main thread happens to be can land inside XLA's compiler or orbax's
writer, which do not survive it: the process can crash on its way out, or the exception be lost and the run
go on. So the first signal only asks: :func:`requested` turns true, and :func:`jaxdrop.training.fit` (given
``stop=requested``) saves the step's checkpoint and raises :class:`~jaxdrop.errors.TrainingStopped` at the
next boundary between compiled pieces (an epoch, or a ``--checkpoint-every`` interval). A second signal, a
second or more later, raises at once, as Python's own Ctrl-C does (the same signal again within
:data:`REPEAT_S` is one request: a terminal sends Ctrl-C to a whole process group).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Iterator

__all__ = [
    "REPEAT_S", "Terminated", "ask_on_signals", "pending", "raise_if_requested", "requested",
    "stopping_gracefully",
]

REPEAT_S = 1.0  # the same signal again within this many seconds is the same request
_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_first: list[tuple[int, float]] = []  # (signal, time) of the request, while one is pending


class Terminated(KeyboardInterrupt):
  """SIGTERM raised at once, as Ctrl-C raises :class:`KeyboardInterrupt`: a second one, or one asked before
  work that must not start (:func:`raise_if_requested`)."""

  def __init__(self, signum: int):
    super().__init__(f"stopped by signal {signal.Signals(signum).name}")
    self.signum = signum

  def __reduce__(self):
    return type(self), (self.signum,)


def requested() -> bool:
  """Whether a stop was asked for (a Ctrl-C or SIGTERM under :func:`stopping_gracefully`)."""
  return bool(_first)


def pending() -> signal.Signals | None:
  """The signal that asked for the stop, or ``None``."""
  return signal.Signals(_first[0][0]) if _first else None


def _handle(signum: int, frame) -> None:
  now = time.monotonic()
  if not _first:
    _first.append((signum, now))
    what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    print(f"jaxdrop: {what}: the run stops at the end of its current epoch or checkpoint interval (saving a"
          " checkpoint if it keeps them); send it again to stop at once", file=sys.stderr, flush=True)
    return
  if signum == _first[0][0] and now - _first[0][1] < REPEAT_S:
    return
  raise _at_once(signum)


def _at_once(signum: int, what: str = "") -> KeyboardInterrupt:
  """What the signal raises when it stops the process at once: Python's Ctrl-C, or :class:`Terminated`."""
  return KeyboardInterrupt(what) if signum == signal.SIGINT else Terminated(signum)


def raise_if_requested(what: str) -> None:
  """Raises as the pending signal would at once (:class:`Terminated`, :class:`KeyboardInterrupt`) if a stop was
  asked: for work that should not start after it. ``what`` names that work in the message."""
  if _first:
    raise _at_once(_first[0][0], f"{what} did not start")


def ask_on_signals() -> dict[int, object]:
  """Ctrl-C and SIGTERM ask for a stop from now on in this process (a worker's initializer; on the main
  thread); a signal the process ignores stays ignored. Returns the handlers they had."""
  return {s: signal.signal(s, _handle) for s in _SIGNALS
          if signal.getsignal(s) is not signal.SIG_IGN}  # as a job started in the background ignores Ctrl-C


@contextlib.contextmanager
def stopping_gracefully() -> Iterator[None]:
  """Within it, Ctrl-C and SIGTERM ask for a stop (:func:`requested`) instead of raising; the previous
  handlers come back after it, and the request is forgotten. A signal this process ignores stays ignored;
  off the main thread it does nothing (Python runs handlers on the main thread only).

  Example:
    >>> with stopping_gracefully():
    ...   requested()
    False
  """
  if threading.current_thread() is not threading.main_thread():
    yield
    return
  previous = ask_on_signals()
  try:
    yield
  finally:
    for s, handler in previous.items():
      signal.signal(s, handler)
    _first.clear()

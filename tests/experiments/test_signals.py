"""The first Ctrl-C or SIGTERM asks for a stop, a second one (not a repeat of the first) stops at once."""

import os
import signal
import threading
import time

import pytest

from experiments import signals

pytestmark = [pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                 reason="Python runs signal handlers on the main thread only"),
              pytest.mark.usefixtures("ctrl_c_as_in_a_terminal")]


def deliver(signum):
  os.kill(os.getpid(), signum)
  time.sleep(0.01)  # the handler runs at the main thread's next bytecode


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_the_first_signal_asks_a_repeat_is_the_same_request_a_second_raises(signum, monkeypatch, capfd):
  monkeypatch.setattr(signals, "REPEAT_S", 0.2)
  before = signal.getsignal(signum)
  with signals.stopping_gracefully():
    assert not signals.requested() and signals.pending() is None
    deliver(signum)
    deliver(signum)  # a terminal's Ctrl-C reaches the parent and its workers: one request
    assert signals.requested() and signals.pending() == signum
    time.sleep(0.25)
    with pytest.raises(KeyboardInterrupt) as forced:
      deliver(signum)
    assert type(forced.value) is (signals.Terminated if signum == signal.SIGTERM else KeyboardInterrupt)
  assert not signals.requested() and signal.getsignal(signum) is before  # the request and handler are gone
  err = capfd.readouterr().err
  assert err.count("send it again to stop at once") == 1 and ("Ctrl-C" if signum == signal.SIGINT else "SIGTERM") in err


def test_another_signal_soon_after_the_first_is_not_a_repeat(capfd):
  with signals.stopping_gracefully():
    deliver(signal.SIGINT)
    with pytest.raises(signals.Terminated):
      deliver(signal.SIGTERM)
  capfd.readouterr()

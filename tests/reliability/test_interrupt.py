"""The stop flag: a signal sets it at once, whichever Python handler runs; worker loops stop within a step."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from robustprune import interrupt

pytestmark = pytest.mark.reliability


@pytest.fixture
def installed():
    interrupt.reset()
    interrupt.install()
    yield
    interrupt.uninstall()
    interrupt.reset()


def _wait(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.001)
    return True


def test_sigterm_raises_in_the_main_thread_and_sets_the_flag(installed):
    with pytest.raises(interrupt.StopRequested) as info:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler raises at the next bytecode
    assert info.value.signum == signal.SIGTERM and "SIGTERM" in str(info.value)
    assert interrupt.stop_requested() and interrupt.stop_signal() == signal.SIGTERM
    assert interrupt.exit_code(interrupt.stop_signal()) == 143
    with pytest.raises(interrupt.StopRequested):
        interrupt.raise_if_stopped()


def test_flag_is_set_even_when_another_handler_owns_the_signal(installed):
    """Prefect replaces the SIGTERM handler during a flow run; the wake-up fd still reports the signal."""
    seen = []
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: seen.append(signum))
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        assert _wait(lambda: bool(seen)) and _wait(interrupt.stop_requested)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert interrupt.stop_signal() == signal.SIGTERM


def test_a_worker_thread_loop_stops_within_one_step(installed):
    steps, errors = [], []

    def loop() -> None:
        try:
            for i in range(100_000):
                interrupt.raise_if_stopped()
                steps.append(i)
                time.sleep(0.001)
        except interrupt.StopRequested as e:
            errors.append(e)

    signal.signal(signal.SIGINT, lambda signum, frame: None)  # the main thread carries on (as in Prefect)
    worker = threading.Thread(target=loop)
    worker.start()
    assert _wait(lambda: len(steps) > 5)
    os.kill(os.getpid(), signal.SIGINT)
    worker.join(timeout=5)
    assert not worker.is_alive() and errors and interrupt.stop_signal() == signal.SIGINT
    assert interrupt.exit_code(signal.SIGINT) == 130


def test_uninstall_restores_handlers_and_reset_clears():
    before = {s: signal.getsignal(s) for s in interrupt.STOP_SIGNALS}
    interrupt.install()
    assert all(signal.getsignal(s) is not before[s] for s in interrupt.STOP_SIGNALS)
    interrupt.request_stop(signal.SIGTERM)
    interrupt.uninstall()
    assert {s: signal.getsignal(s) for s in interrupt.STOP_SIGNALS} == before
    interrupt.reset()
    assert not interrupt.stop_requested() and interrupt.stop_signal() is None
    interrupt.raise_if_stopped()  # no-op once cleared

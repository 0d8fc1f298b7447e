"""A process-wide stop flag: SIGTERM / SIGINT stop long loops within one step, in any thread.

``python -m flows.<stage>`` (plumbing/cli.py, plumbing/signals.py) calls :func:`install` once. From then on a SIGTERM or SIGINT

- sets the flag at once, from a watcher thread fed by :func:`signal.set_wakeup_fd`: the C-level signal
  handler writes the signal number there whichever Python-level handler is installed, so the flag is set
  even while Prefect's own SIGTERM handler (installed for the duration of every flow run) is the one that
  runs;
- in the main thread, raises :class:`StopRequested` (a ``KeyboardInterrupt``) at the next bytecode, like
  Ctrl-C does.

Code running in worker threads (Prefect's thread-pool task runner runs fine-tuning, evaluation and attack
shards there) cannot be interrupted from outside: long loops call :func:`raise_if_stopped` once per step,
so a stop lands within one training step, one pruned block or one attacked example.

Outputs stay consistent because every output is written atomically (robustprune.checkpoints): an
interrupted writer leaves the previous file or directory, never a partial one.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)

_event = threading.Event()
_lock = threading.Lock()
_state: dict[str, float | int | None] = {"signal": None, "at": None}
_installed: dict[str, object] = {}


class StopRequested(KeyboardInterrupt):
    """Raised where work stops because the process received SIGTERM or SIGINT.

    A ``BaseException`` (through ``KeyboardInterrupt``): ``except Exception`` blocks do not swallow it and
    Prefect does not retry a task that raised it.
    """

    def __init__(self, signum: int | None = None) -> None:
        self.signum = signum
        name = signal.Signals(signum).name if signum else "a stop request"
        super().__init__(f"stopped by {name}")


def request_stop(signum: int | None = None) -> None:
    """Set the flag (idempotent: the first signal's number and time are kept)."""
    with _lock:
        if not _event.is_set():
            _state["signal"], _state["at"] = signum, time.monotonic()
            _event.set()


def stop_requested() -> bool:
    return _event.is_set()


def stop_signal() -> int | None:
    """The signal that set the flag (None: not stopped, or stopped by :func:`request_stop` without one)."""
    return _state["signal"] if _event.is_set() else None  # type: ignore[return-value]


def seconds_since_stop() -> float | None:
    at = _state["at"]
    return None if at is None or not _event.is_set() else time.monotonic() - float(at)


def raise_if_stopped() -> None:
    """Call once per step of a long loop: raises :class:`StopRequested` after a stop signal."""
    if _event.is_set():
        raise StopRequested(stop_signal())


def reset() -> None:
    """Clear the flag (tests; a process that handled a stop and goes on)."""
    with _lock:
        _event.clear()
        _state["signal"] = _state["at"] = None


def _handler(signum: int, frame: object) -> None:
    request_stop(signum)
    raise StopRequested(signum)


def _watch(sock: socket.socket) -> None:
    wanted = {int(s) for s in STOP_SIGNALS}
    while True:
        try:
            data = sock.recv(64)
        except OSError:
            return
        if not data:
            return
        for byte in data:
            if byte in wanted:
                request_stop(byte)


def install() -> None:
    """Stop handlers for SIGTERM and SIGINT plus the wake-up watcher; main thread only, idempotent."""
    if _installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        _installed[f"handler-{int(sig)}"] = signal.signal(sig, _handler)
    reader, writer = socket.socketpair()
    writer.setblocking(False)
    previous = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    _installed.update(reader=reader, writer=writer, wakeup=previous)
    threading.Thread(target=_watch, args=(reader,), name="robustprune-stop-watch", daemon=True).start()


def uninstall() -> None:
    """Restore the previous handlers and wake-up fd (tests)."""
    if not _installed or threading.current_thread() is not threading.main_thread():
        return
    for sig in STOP_SIGNALS:
        previous = _installed.pop(f"handler-{int(sig)}", None)
        if previous is not None:
            signal.signal(sig, previous)  # type: ignore[arg-type]
    signal.set_wakeup_fd(int(_installed.pop("wakeup", -1)))  # type: ignore[call-overload]
    for key in ("writer", "reader"):
        with contextlib.suppress(OSError):
            _installed.pop(key).close()  # type: ignore[union-attr]
    _installed.clear()


def exit_code(signum: int | None) -> int:
    """The shell's convention for a process ended by a signal: 128 + its number (130 SIGINT, 143 SIGTERM)."""
    return 128 + int(signum) if signum else 1


__all__ = [
    "STOP_SIGNALS",
    "StopRequested",
    "exit_code",
    "install",
    "raise_if_stopped",
    "request_stop",
    "reset",
    "seconds_since_stop",
    "stop_requested",
    "stop_signal",
    "uninstall",
]

"""Prefect's temporary local server, started outside this process group so that a signal spares it."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator


@contextlib.contextmanager
def detached_prefect_server() -> Iterator[None]:
    """Without a configured Prefect API, run the temporary local server outside this process group.

    Prefect would start it as a child in the same process group, so a Ctrl-C or a ``timeout`` / systemd
    SIGTERM (sent to the whole group) stops the server together with the flow, and the flow then hangs
    retrying to report its state to a server that is gone. Started in its own session (and told to exit
    when this process dies, on Linux), it outlives the signal long enough for the run to be recorded.
    """
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        yield
        return
    server = _DetachedServer.create()
    server.start(timeout=max(60, int(settings.server.ephemeral.startup_timeout_seconds)))  # a loaded machine
    try:
        with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
            try:
                yield
            finally:
                _flush_prefect_logs()
    finally:
        server.stop()


def _flush_prefect_logs() -> None:
    """Send the queued flow/task logs while the temporary server still runs.

    Left for the interpreter's exit, Prefect's log worker retries against the stopped server: every
    ``python -m flows.<stage>`` then lingered about 70 s after its last line ("Error logging to API").
    """
    with contextlib.suppress(Exception):
        from prefect.logging.handlers import APILogHandler

        APILogHandler().flush()


class _DetachedServer:
    """Prefect's temporary server (SubprocessASGIServer), its process in a new session."""

    @staticmethod
    def create():  # noqa: ANN205 - a SubprocessASGIServer subclass instance
        import signal
        import subprocess

        from prefect.server.api.server import SubprocessASGIServer

        preexec = None
        if sys.platform.startswith("linux"):  # PR_SET_PDEATHSIG: SIGTERM when this process dies
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl

            def preexec() -> None:
                prctl(1, int(signal.SIGTERM))

        class Server(SubprocessASGIServer):
            _instances: dict = {}  # not Prefect's singleton: this one is ours

            def _run_uvicorn_command(self) -> subprocess.Popen:
                popen = subprocess.Popen

                def detached(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
                    return popen(*args, start_new_session=True, preexec_fn=preexec, **kwargs)

                subprocess.Popen = detached  # type: ignore[misc]  # only for Prefect's one Popen call
                try:
                    return super()._run_uvicorn_command()
                finally:
                    subprocess.Popen = popen  # type: ignore[misc]

        return Server()

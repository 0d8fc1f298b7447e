"""Stopping on SIGTERM / SIGINT: run a flow with the stop flag installed and, after a stop, mark this
invocation's Prefect flow runs Cancelled and its MLflow runs KILLED, print one line and exit 128 + signal.

What finished is kept (every output is written atomically), so the same command resumes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from plumbing.mlflow_store import tracking_uri
from plumbing.prefect_server import detached_prefect_server
from robustprune.config import load_params

#: the tag on every Prefect run (``RUN_TAG:<id>``) and MLflow run (``RUN_TAG = <id>``) of one invocation
RUN_TAG = "robustprune.invocation"


def run_stoppable(stage: str, flow_fn: Callable, kwargs: dict, params_path: str, root: str) -> object:
    """Run ``flow_fn(**kwargs)`` with the stop flag installed and the invocation tagged; exit on a stop."""
    from prefect import tags
    from prefect.exceptions import TerminationSignal

    from robustprune import interrupt

    invocation = uuid.uuid4().hex[:16]
    context = json.loads(os.environ.get("MLFLOW_RUN_CONTEXT") or "{}")
    os.environ["MLFLOW_RUN_CONTEXT"] = json.dumps({**context, RUN_TAG: invocation})
    interrupt.install()

    def is_stop(e: BaseException) -> bool:
        # after a stop signal, whatever the unwinding raised (a broken connection...) is part of the stop
        return isinstance(e, KeyboardInterrupt | TerminationSignal) or interrupt.stop_requested()

    notes: list[str] | None = None
    try:
        with detached_prefect_server():  # the flow and, after a stop, the bookkeeping use the same server
            try:
                with tags(f"{RUN_TAG}:{invocation}"):
                    return flow_fn(**kwargs)
            except BaseException as e:
                if not is_stop(e):
                    raise
                interrupt.request_stop(interrupt.stop_signal() or getattr(e, "signal", None) or 15)
                with _signals_ignored():  # a second Ctrl-C must not cut the bookkeeping short (bounded)
                    notes = finalize_stop(invocation, params_path, root)
    except BaseException as e:  # a stop while the temporary server started or stopped
        if not is_stop(e):
            raise
        interrupt.request_stop(interrupt.stop_signal() or getattr(e, "signal", None) or 15)
    signum = interrupt.stop_signal() or 15
    notes = notes if notes is not None else ["stopped before the flow started"]
    name = {2: "SIGINT", 15: "SIGTERM"}.get(int(signum), f"signal {signum}")
    print(
        f"stopped by {name} in stage {stage!r} ({interrupt.seconds_since_stop() or 0.0:.1f}s after the signal): "
        f"{'; '.join(notes)}. Finished work is kept; run the same command again to resume.",
        file=sys.stderr,
        flush=True,
    )
    # Everything is recorded: leave now. A normal interpreter exit would first garbage-collect the whole
    # heap (torch, transformers, Prefect, MLflow), which takes seconds to tens of seconds on a busy machine.
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(interrupt.exit_code(signum))


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    import signal

    from robustprune.interrupt import STOP_SIGNALS, request_stop

    previous = {sig: signal.signal(sig, lambda signum, frame: request_stop(signum)) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def finalize_stop(invocation: str, params_path: str, root: str, timeout: float = 5.0) -> list[str]:
    """Mark this invocation's runs: Prefect flow runs Cancelled (remote ones Cancelling), MLflow runs KILLED.

    Best effort within ``timeout`` seconds each: a Prefect server that went down with the same signal
    (a temporary server is a child of this process) is reported, not raised.
    """
    notes = []
    try:
        n = _cancel_prefect_runs(f"{RUN_TAG}:{invocation}", timeout)
        notes.append(f"{n} Prefect flow run(s) marked Cancelled")
    except Exception as e:  # noqa: BLE001 - the server may be gone; say so in one line
        notes.append(
            f"Prefect runs not updated ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
        )
    try:
        n = _kill_mlflow_runs(invocation, params_path, root)
        notes.append(f"{n} MLflow run(s) marked KILLED")
    except Exception as e:  # noqa: BLE001
        notes.append(
            f"MLflow runs not updated ({type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})"
        )
    return notes


def _cancel_prefect_runs(tag: str, timeout: float) -> int:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        FlowRunFilterTags,
    )
    from prefect.states import Cancelled, Cancelling

    message = "Stopped by a signal (SIGTERM/SIGINT); finished work is kept, run again to resume."
    with get_client(sync_client=True, httpx_settings={"timeout": timeout}) as client:
        ours = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[tag])), limit=200
        )
        children = (
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[r.id for r in ours])
                ),
                limit=200,
            )
            if ours
            else []
        )
        marked = 0
        for run in {r.id: r for r in [*ours, *children]}.values():
            state = run.state
            if state is None or state.is_completed() or state.is_cancelled() or state.is_failed():
                continue
            if run.deployment_id is not None and not state.is_final():
                client.set_flow_run_state(
                    run.id, Cancelling(message=message), force=True
                )  # its worker stops it
            else:
                client.set_flow_run_state(run.id, Cancelled(message=message), force=True)
            marked += 1
        return marked


def _kill_mlflow_runs(invocation: str, params_path: str, root: str) -> int:
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(load_params(params_path), Path(root).resolve())
    if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).exists():
        return 0  # stopped before anything was logged
    mlflow.set_tracking_uri(uri)
    while mlflow.active_run() is not None:  # a run left open by the interrupted code
        mlflow.end_run("KILLED")
    client = MlflowClient(uri)
    # every experiment: runs nested with mlflow.start_run(nested=True) land in the active experiment
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments, filter_string=f"tags.`{RUN_TAG}` = '{invocation}'", max_results=1000
    )
    marked = 0
    for run in runs:
        if run.info.status in ("RUNNING", "FAILED", "SCHEDULED"):
            client.set_terminated(run.info.run_id, status="KILLED")
            marked += 1
    return marked

"""Shared command line of every flow: validate first and fail fast, run, stop cleanly on SIGTERM / SIGINT.

``python -m flows.<stage> --params P --root R``:

1. Validation (exit 2, one line per problem, nothing written): params.yaml (robustprune.config) and the
   inputs it names (robustprune.preflight). ``flows/__init__.py`` calls :func:`early_validate` when the
   package is imported by ``python -m flows.<stage>``, i.e. before Prefect, MLflow and torch are imported,
   so a bad input costs about a second.
2. The flow runs with the stop flag installed (robustprune.interrupt) and every Prefect run and MLflow run it
   creates tagged with one id for this invocation.
3. On SIGTERM or SIGINT the work stops within a step (main thread at once; worker threads at their next
   :func:`robustprune.interrupt.raise_if_stopped`), then :func:`finalize_stop` marks this invocation's
   Prefect flow runs Cancelled (Prefect itself records a signal as Crashed; a run on a work pool is asked
   to cancel, so its worker stops it) and its MLflow runs KILLED, prints one line and exits 128 + signal
   (130 for SIGINT, 143 for SIGTERM). Every output is written atomically, so what finished is kept and
   the same command resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

from robustprune.config import ConfigError, load_params
from robustprune.preflight import PrefectApi, PreflightError, check_work_pool, preflight, stage_inputs

REPO = Path(__file__).resolve().parent.parent
# stages the pipeline sends to runtime.work_pool P as the deployment "<stage>/<stage>-P" (prefect.yaml);
# `python -m flows.lm` sends the lm flow to "lm/lm-P"
GPU_STAGES = ("finetune", "prune", "sds", "cap", "evaluate", "attack")
REMOTE_STANDALONE = ("lm",)


def deployment_name(stage: str, pool: str) -> str:
    """The deployment that runs ``stage`` on work pool ``pool`` (prefect.yaml, ``ROBUSTPRUNE_GPU_POOL=pool``)."""
    return f"{stage}/{stage}-{pool}"


def remote_deployments(stage: str, pool: str) -> list[str]:
    """The deployments a run of ``stage`` (``pipeline`` or a standalone remote stage) sends to ``pool``."""
    stages = GPU_STAGES if stage == "pipeline" else (stage,) if stage in REMOTE_STANDALONE else ()
    return [deployment_name(s, pool) for s in stages]


RUN_TAG = "robustprune.invocation"
_validated: set[tuple[str, str, str]] = set()


def parse_args(stage: str, argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog=f"python -m flows.{stage}", description=f"Run the '{stage}' flow.")
    default = "params-lm.yaml" if stage == "lm" else "params.yaml"
    ap.add_argument("--params", default=default, help=f"params file (default: {default})")
    ap.add_argument(
        "--root", default=".", help="project root that holds data/, models/, reports/ (default: .)"
    )
    if stage == "pipeline":
        ap.add_argument(
            "--force", action="store_true", help="re-run every stage even if DVC says it is up to date"
        )
    return ap.parse_args(argv)


def prefect_api() -> PrefectApi:
    """The Prefect API this process would use (settings, profile or environment), with its auth header."""
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    headers = {}
    if api.auth_string:
        import base64

        secret = (
            api.auth_string.get_secret_value()
            if hasattr(api.auth_string, "get_secret_value")
            else api.auth_string
        )
        headers["Authorization"] = "Basic " + base64.b64encode(str(secret).encode()).decode()
    elif api.key:
        secret = api.key.get_secret_value() if hasattr(api.key, "get_secret_value") else api.key
        headers["Authorization"] = f"Bearer {secret}"
    return PrefectApi(api.url, headers)


def validate_or_exit(params_path: str, root: str, stage: str) -> None:
    """Exit 2 with one line per problem when params.yaml or the inputs it names are bad."""
    if (params_path, root, stage) in _validated:
        return
    t0 = time.perf_counter()
    try:
        params = load_params(params_path)
        dvc_yaml = REPO / ("lm/dvc.yaml" if stage == "lm" else "dvc.yaml")
        pool = params.runtime.work_pool
        remote = bool(pool) and stage in ("pipeline", *REMOTE_STANDALONE)
        problems = scaleout_problems(params, params_path, root, remote)
        if remote and stage in REMOTE_STANDALONE and params.runtime.storage == "dvc":
            problems.append(
                f"runtime.storage = 'dvc' synchronises the pipeline's GPU stages only; the {stage} flow on "
                f"work pool {pool!r} needs storage: shared (a file system the worker shares)"
            )
        try:
            preflight(
                params,
                Path(root),
                stage,
                prefect_api=prefect_api() if remote and stage == "pipeline" else None,
                remote_deployments=remote_deployments(stage, pool) if remote else (),
                # a stage sent to a worker reads its inputs there
                stage_inputs=None if stage == "pipeline" or remote else stage_inputs(dvc_yaml, stage),
            )
        except PreflightError as e:
            problems.append(str(e))
        if remote and stage != "pipeline":  # a standalone stage on the pool: the pool and its deployment
            problems += check_work_pool(prefect_api(), pool, remote_deployments(stage, pool))
        if problems:
            raise PreflightError("\n".join(problems))
    except (ConfigError, PreflightError) as e:
        print(
            f"error: invalid configuration, nothing was run or written ({time.perf_counter() - t0:.1f}s):\n{e}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    _validated.add((params_path, root, stage))


def scaleout_problems(params, params_path: str, root: str, remote: bool) -> list[str]:  # noqa: ANN001 - Params
    """Task runner installed; with a work pool, a params file the worker can find under the project root."""
    import importlib.util

    out = []
    rt = params.runtime
    wanted = {
        "dask": ("prefect_dask", "prefect-dask (requirements.txt)"),
        "ray": ("prefect_ray", "prefect-ray"),
    }
    if rt.task_runner in wanted and importlib.util.find_spec(wanted[rt.task_runner][0]) is None:
        extra = " (pip install -e '.[ray]')" if rt.task_runner == "ray" else ""
        out.append(
            f"runtime.task_runner = {rt.task_runner!r}: {wanted[rt.task_runner][1]} is not installed{extra}; "
            "use thread or process"
        )
    if remote:
        p = Path(params_path)
        p = (p if p.is_absolute() else Path.cwd() / p).resolve()
        if not p.is_relative_to(Path(root).resolve()):
            out.append(
                f"runtime.work_pool = {rt.work_pool!r}: the params file {params_path!r} is outside the project "
                f"root {str(Path(root).resolve())!r}, so a worker cannot read it; put it under the root"
            )
    if remote and rt.storage == "dvc":
        out += dvc_remote_problems(Path(root))
    return out


def dvc_remote_problems(root: Path) -> list[str]:
    """runtime.storage: dvc: the project is a DVC repository with a default remote (`dvc remote default`)."""
    where = str(root.resolve())
    if not (root / ".dvc").is_dir():
        return [
            f"runtime.storage = 'dvc': {where!r} is not a DVC repository (no .dvc/): dvc init, then "
            "dvc remote add -d <name> <url> (on this host and on the worker's)"
        ]
    from dvc.config import Config  # about 0.2 s: the repository's, local, global and system config merged

    try:
        config = Config(dvc_dir=str(root / ".dvc"), validate=False)
    except Exception as e:  # noqa: BLE001 - a broken config file: one line that says so
        return [
            f"runtime.storage = 'dvc': the DVC config of {where!r} cannot be read ({type(e).__name__}: {e})"
        ]
    name = config["core"].get("remote")
    if not name:
        return [
            f"runtime.storage = 'dvc': no default DVC remote in {where!r} (`dvc remote default` is empty); "
            "on both hosts: dvc remote add -d <name> <url> (credentials in .dvc/config.local)"
        ]
    if not config["remote"].get(name, {}).get("url"):
        return [f"runtime.storage = 'dvc': the default DVC remote {name!r} of {where!r} has no url"]
    return []


def early_validate() -> None:
    """Validate before the heavy imports when this process is ``python -m flows.<stage> ...``.

    Called from flows/__init__.py; while ``-m`` imports the package, ``sys.argv[0]`` is ``"-m"`` and
    ``sys.orig_argv`` holds the command line. Anything else (pytest, a Prefect worker, an import) is left
    alone. Argument errors are left to :func:`main`'s parser.
    """
    argv = getattr(sys, "orig_argv", [])
    if sys.argv[:1] != ["-m"] or "-m" not in argv:
        return
    module = argv[argv.index("-m") + 1] if argv.index("-m") + 1 < len(argv) else ""
    if not module.startswith("flows.") or module.count(".") != 1 or module in ("flows._cli", "flows.cli"):
        return
    stage = module.split(".", 1)[1]
    try:  # quietly: --help and usage errors are main()'s to print, once
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            args = parse_args(stage, sys.argv[1:])
    except SystemExit:
        return
    validate_or_exit(args.params, args.root, stage)


def main(stage: str, flow_fn: Callable, argv: list[str] | None = None) -> None:
    args = parse_args(stage, argv)
    validate_or_exit(args.params, args.root, stage)
    kwargs = {"params_path": args.params, "root": args.root}
    if stage == "pipeline":
        kwargs["force"] = args.force
    params = load_params(args.params)
    if stage in REMOTE_STANDALONE and params.runtime.work_pool:  # e.g. `make run-lm` on a GPU pool
        from flows.pipeline import remote_env, run_remote

        root = Path(args.root).resolve()
        env = remote_env(params, root, None)

        def flow_fn(params_path: str, root: str) -> object:  # noqa: ARG001 - the same keyword arguments
            return run_remote(stage, params.runtime.work_pool, params_path, Path(root).resolve(), env)

    else:  # runtime.task_runner / max_workers / dask_address from params.yaml (tasks.common.task_runner)
        from tasks.common import runner_settings, task_runner

        flow_fn = flow_fn.with_options(task_runner=task_runner(runner_settings(params)))
    run_stoppable(stage, flow_fn, kwargs, args.params, args.root)


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

    from tasks.common import tracking_uri

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

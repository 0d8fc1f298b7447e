"""The Prefect task runner ``runtime.task_runner`` asks for, in-process or on a worker."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from typing import Any

from robustprune.config import Params

#: runtime.task_runner / max_workers / dask_address / ray_address as JSON, for a stage flow started by a
#: Prefect worker (the pipeline passes it through the deployment's job variables; see default_task_runner)
RUNNER_ENV = "ROBUSTPRUNE_TASK_RUNNER"
RUNNER_KEYS = ("task_runner", "max_workers", "dask_address", "ray_address")


def runner_settings(params: Params) -> dict[str, Any]:
    """The runtime keys that choose a task runner, as a plain dict (what RUNNER_ENV carries)."""
    return {k: getattr(params.runtime, k) for k in RUNNER_KEYS}


def task_runner(settings: Mapping[str, Any] | None = None) -> Any:
    """The Prefect task runner ``runtime.task_runner`` asks for (``settings``: :func:`runner_settings`).

    thread / process: Prefect's pools with ``max_workers``; dask: prefect-dask on the scheduler at
    ``dask_address``, or a ``LocalCluster`` of ``max_workers`` single-threaded worker processes; ray:
    prefect-ray (the ``ray`` extra) on ``ray_address`` or a local Ray instance. Flows apply it at call time:
    ``flow.with_options(task_runner=task_runner(runner_settings(params)))``.
    """
    s = {
        "task_runner": "thread",
        "max_workers": 1,
        "dask_address": None,
        "ray_address": None,
        **(settings or {}),
    }
    kind, n = s["task_runner"], int(s["max_workers"])
    if kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=n)
    if kind == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(max_workers=n)
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if s["dask_address"]:
            return DaskTaskRunner(address=s["dask_address"])
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster", cluster_kwargs=local_cluster_kwargs(n)
        )
    if kind == "ray":
        try:
            from prefect_ray import RayTaskRunner
        except ImportError as e:
            raise RuntimeError(
                "runtime.task_runner = 'ray' needs prefect-ray: pip install -e '.[ray]' (pyproject extra)"
            ) from e
        return RayTaskRunner(address=s["ray_address"]) if s["ray_address"] else RayTaskRunner()
    raise ValueError(f"runtime.task_runner = {kind!r}: not one of thread, process, dask, ray")


def local_cluster_kwargs(n_workers: int) -> dict[str, Any]:
    """A Dask LocalCluster on this host: one single-threaded worker process per task, no dashboard."""
    return {"n_workers": n_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None}


def default_task_runner() -> Any:
    """A stage flow's own default: $ROBUSTPRUNE_TASK_RUNNER when a worker started it, else one thread.

    ``python -m flows.<stage>`` and the pipeline replace it with params.yaml's choice at call time; a stage
    started by a Prefect worker (``runtime.work_pool``) imports its module with the pipeline's choice in
    the environment, because the worker calls the decorated flow as it is.
    """
    import json

    raw = os.environ.get(RUNNER_ENV)
    return task_runner(json.loads(raw) if raw else None)


@contextlib.contextmanager
def shared_runner(settings: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The task-runner settings for every stage flow of one pipeline run: with ``dask`` and no address, one
    LocalCluster for all of them (instead of one per stage), closed at the end."""
    if settings["task_runner"] != "dask" or settings["dask_address"]:
        yield settings
        return
    from distributed import LocalCluster

    with LocalCluster(**local_cluster_kwargs(settings["max_workers"])) as cluster:
        yield {**settings, "dask_address": cluster.scheduler_address}

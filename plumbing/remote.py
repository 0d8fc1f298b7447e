"""Stages sent to ``runtime.work_pool``: the deployment that runs a stage on a pool, and running it there.

With ``runtime.work_pool: P`` the pipeline's GPU stages run as the deployments ``<stage>/<stage>-P``
(prefect.yaml, deployed with ``ROBUSTPRUNE_GPU_POOL=P``); ``python -m flows.lm`` sends the lm flow to
``lm/lm-P``. docs/deployment.md describes the set-ups.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from plumbing.mlflow_store import PARENT_ENV, URI_ENV, tracking_uri
from plumbing.runners import RUNNER_ENV, runner_settings

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


def relative_to_root(path: str | Path, root: Path) -> str:
    """``path`` relative to the project root, as a worker whose checkout is elsewhere must be told it."""
    p = Path(path)
    p = p if p.is_absolute() else Path.cwd() / p
    try:
        return p.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise ValueError(
            f"params file {str(path)!r} is outside the project root {str(root)!r}: a worker cannot read it; "
            "put it under the root (runtime.work_pool)"
        ) from None


def remote_env(params, root: Path, parent_run_id: str | None) -> dict[str, str]:  # noqa: ANN001 - Params
    """What a stage run on a worker must know from this process: MLflow parent run and store, task runner."""
    env = {URI_ENV: tracking_uri(params, root), RUNNER_ENV: json.dumps(runner_settings(params))}
    if parent_run_id:
        env[PARENT_ENV] = parent_run_id
    if os.environ.get("MLFLOW_RUN_CONTEXT"):  # this invocation's tag on MLflow runs (plumbing/signals.py)
        env["MLFLOW_RUN_CONTEXT"] = os.environ["MLFLOW_RUN_CONTEXT"]
    return env


def run_remote(stage: str, work_pool: str, params_path: str, root: Path, env: Mapping[str, str]) -> Any:
    """Run a stage flow as the deployment ``<stage>/<stage>-<work_pool>`` and wait for it; returns its flow run.

    Prefect cannot move a run to another pool (``work_queue_name`` only picks a queue inside the
    deployment's pool), so the pool is chosen by choosing the deployment: prefect.yaml registers one per
    pool. The idempotency key (pipeline flow run, stage) makes a retried pipeline run find the stage's run
    instead of starting a second one.
    """
    from prefect.context import TagsContext
    from prefect.deployments import run_deployment
    from prefect.runtime import flow_run

    name = deployment_name(stage, work_pool)
    run = run_deployment(
        name=name,
        parameters={"params_path": relative_to_root(params_path, root), "root": "."},
        job_variables={"env": dict(env)},
        idempotency_key=f"{flow_run.get_id()}:{stage}" if flow_run.get_id() else None,
        tags=sorted(TagsContext.get().current_tags),
        poll_interval=2,
        timeout=None,
    )
    if not run.state or not run.state.is_completed():
        raise RuntimeError(
            f"stage {stage!r}: deployment {name!r} on work pool {work_pool!r} ended "
            f"{run.state.name if run.state else 'unknown'} (flow run {run.name}, {run.id})"
        )
    return run

"""The whole DAG as one Prefect flow: every stage flow runs as a subflow (``python -m flows.pipeline``).

DVC is the cache of record. Before a stage runs, ``dvc status`` for that stage tells whether its code,
params and inputs changed since it last ran; an up-to-date stage is skipped (logged as a cache hit), and
a stage that ran is recorded with ``dvc commit``, so ``make run``, ``dvc repro`` and this flow share one
``dvc.lock`` and never redo each other's work. Without a DVC repository at the root (a bare copy, a
test's tmp dir) every stage runs.

With ``runtime.work_pool: P`` set, the GPU stages (finetune, prune, sds, cap, evaluate, attack) run as the
deployments ``<stage>/<stage>-P`` on work pool P (prefect.yaml, deployed with ``ROBUSTPRUNE_GPU_POOL=P``;
served by ``prefect worker start --pool P`` on a CUDA host whose checkout is ``$ROBUSTPRUNE_DIR``); the
others run in-process. A remote stage gets paths relative to the project root, the MLflow tracking URI and
parent run id and the task-runner choice through the run's job variables (environment), and one
idempotency key per (pipeline flow run, stage), so a retried pipeline run never starts a stage twice.
docs/deployment.md describes the set-ups (shared file system, or a checkout synchronised through DVC).
With ``runtime.storage: dvc`` the pipeline pushes what dvc.lock records and sends dvc.lock with the run;
afterwards it writes the stage's lock entry the worker published into dvc.lock and pulls the outputs
(tasks/dvc_sync.py).

``runtime.task_runner`` / ``max_workers`` / ``dask_address`` choose how every stage flow runs its
independent tasks (:func:`tasks.common.task_runner`); with ``dask`` and no address the pipeline starts one
``LocalCluster`` and every stage flow uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import mlflow
import yaml
from prefect import flow
from prefect.logging import get_run_logger

import flows  # noqa: F401
from flows import _cli
from flows.attack import attack_flow
from flows.attack_resources import attack_resources_flow
from flows.calibrate import calibrate_flow
from flows.cap import cap_flow
from flows.evaluate import evaluate_flow
from flows.finetune import finetune_flow
from flows.prepare import prepare_flow
from flows.prune import prune_flow
from flows.report import report_flow
from flows.sds import sds_flow
from flows.soup import soup_flow
from robustprune.config import load_params
from tasks import dvc_sync
from tasks.common import (
    PARENT_ENV,
    RUNNER_ENV,
    URI_ENV,
    default_task_runner,
    load,
    local_cluster_kwargs,
    mlflow_setup,
    runner_settings,
    section,
    task_runner,
    tracking_uri,
)

STAGES = {
    "prepare": prepare_flow,
    "attack_resources": attack_resources_flow,  # before soup: the robust soup attacks its candidates
    "finetune": finetune_flow,
    "soup": soup_flow,
    "calibrate": calibrate_flow,
    "prune": prune_flow,
    "sds": sds_flow,
    "cap": cap_flow,
    "attack": attack_flow,
    "evaluate": evaluate_flow,  # after attack: re-scores the adversarial texts found against the dense model
    "report": report_flow,
}
GPU_STAGES = _cli.GPU_STAGES  # sent to runtime.work_pool; flows/_cli.py checks their deployments first


def _dvc_repo(root: Path):  # noqa: ANN202 - dvc.repo.Repo
    if not (root / ".dvc").is_dir() or not (root / "dvc.yaml").is_file():
        return None
    from dvc.repo import Repo

    return Repo(str(root))


def stage_is_fresh(repo, stage: str) -> bool:  # noqa: ANN001
    """True when DVC has a lock entry for the stage and nothing it depends on changed."""
    with contextlib.chdir(repo.root_dir):  # DVC resolves some output paths against the working directory
        return not repo.status(targets=[stage])


def stage_params(dvc_yaml: Path, stage: str) -> list[str]:
    """The params.yaml keys (dotted) that dvc.yaml's ``stage`` tracks."""
    spec = yaml.safe_load(dvc_yaml.read_text())["stages"][stage]
    keys: list[str] = []
    for entry in spec.get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
        else:  # {other_file.yaml: [keys]}: not params.yaml's keys
            raise ValueError(f"dvc.yaml stage {stage!r} tracks params outside params.yaml: {entry!r}")
    return keys


def _dotted(tree: Mapping[str, Any], key: str) -> Any:
    node: Any = tree
    for part in key.split("."):
        node = node[part]
    return node


def same_stage_params(root_params: Mapping[str, Any], other: Mapping[str, Any], keys: list[str]) -> bool:
    """True when every tracked key has the same validated value in both params trees."""
    return all(_dotted(root_params, k) == _dotted(other, k) for k in keys)


def record_stage(repo, stage: str) -> None:  # noqa: ANN001
    """``dvc commit`` the stage: its deps, params and outputs as they are now go into dvc.lock."""
    with contextlib.chdir(repo.root_dir):
        repo.commit(target=stage, force=True)


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
    if os.environ.get("MLFLOW_RUN_CONTEXT"):  # this invocation's tag on MLflow runs (flows/_cli.py)
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

    name = _cli.deployment_name(stage, work_pool)
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


@flow(name="pipeline", log_prints=True, task_runner=default_task_runner())
def pipeline(
    params_path: str = "params.yaml", root: str = ".", force: bool = False, stages: list[str] | None = None
) -> dict:
    """Every stage in order; ``stages`` (names of STAGES) runs only those, in the same order (the
    ``robustprune`` command: ``attack`` needs no pruning, ``prune`` no SDS or CAP)."""
    logger = get_run_logger()
    params, layout = load(params_path, root)
    unknown = sorted(set(stages or ()) - set(STAGES))
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; the stages are {list(STAGES)}")
    repo = _dvc_repo(layout.root)
    # A profile (params-evidence.yaml, ...) is not the params.yaml that dvc.yaml tracks: its stages are not
    # recorded in dvc.lock (that stays the default run's), but a stage is still skipped when dvc status finds
    # it up to date for params.yaml *and* every params key the stage tracks has the same value in the profile
    # (its outputs depend on nothing else). A stage the profile changes reruns, and so does everything whose
    # inputs it rewrites (their dvc.lock hashes no longer match).
    alternate = None
    if repo is None:
        logger.info("no DVC repository at %s: every stage runs", layout.root)
    elif Path(params_path).resolve() != (layout.root / "params.yaml").resolve():
        try:
            alternate = {
                "root": load_params(layout.root / "params.yaml").model_dump(),
                "this": params.model_dump(),
            }
            logger.info(
                "params file %s is not the root params.yaml that dvc.yaml tracks: stages are not recorded in "
                "dvc.lock; a stage up to date for params.yaml with the same values for its params is skipped",
                params_path,
            )
        except (OSError, ValueError) as e:  # no valid params.yaml to compare with: nothing can be skipped
            logger.info("params.yaml of %s unusable (%s): every stage runs", layout.root, e)
            repo.close()
            repo = None
    exp_id = mlflow_setup(params, layout.root)
    timings: dict[str, float] = {}
    skipped: list[str] = []
    with mlflow.start_run(
        run_name="pipeline", experiment_id=exp_id, tags={"seed": str(params.seed)}
    ) as parent:
        mlflow.log_params(
            {
                "seed": params.seed,
                "params_path": params_path,
                **({"stages": ",".join(stages)} if stages is not None else {}),
                **{f"prune.{k}": str(v) for k, v in section(params, "prune")["prune"].items()},
            }
        )
        os.environ[PARENT_ENV] = parent.info.run_id
        pool = params.runtime.work_pool
        sync = bool(pool) and params.runtime.storage == "dvc"
        if sync and repo is None:
            raise RuntimeError(
                f"runtime.storage = 'dvc' needs a DVC repository (and params.yaml) at {layout.root}: "
                "the stages' inputs and outputs travel through its remote"
            )
        try:
            with shared_runner(runner_settings(params)) as runner:
                for stage, fn in STAGES.items():
                    if stages is not None and stage not in stages:
                        continue
                    if repo is not None and not force and stage_is_fresh(repo, stage):
                        keys = stage_params(layout.root / "dvc.yaml", stage) if alternate else []
                        if alternate is None or same_stage_params(alternate["root"], alternate["this"], keys):
                            logger.info(
                                "cache hit: stage %r is up to date (dvc status clean), skipped", stage
                            )
                            skipped.append(stage)
                            continue
                        changed = [
                            k
                            for k in keys
                            if not same_stage_params(alternate["root"], alternate["this"], [k])
                        ]
                        logger.info(
                            "stage %r: %s changes its params %s, it runs", stage, params_path, changed
                        )
                    t0 = time.perf_counter()
                    if pool and stage in GPU_STAGES:
                        logger.info("stage %r -> deployment %r", stage, _cli.deployment_name(stage, pool))
                        env = remote_env(params, layout.root, parent.info.run_id)
                        if sync:  # runtime.storage: dvc (tasks/dvc_sync.py)
                            env |= dvc_sync.before_remote(layout.root, stage)
                        run = run_remote(stage, pool, params_path, layout.root, env)
                        if sync:
                            dvc_sync.after_remote(layout.root, stage, run, record=alternate is None)
                    else:
                        fn.with_options(task_runner=task_runner(runner))(
                            params_path=params_path, root=str(layout.root)
                        )
                    timings[stage] = time.perf_counter() - t0
                    if repo is not None and alternate is None:
                        record_stage(repo, stage)
                        logger.info("stage %r done in %.1f s, recorded in dvc.lock", stage, timings[stage])
        finally:
            os.environ.pop(PARENT_ENV, None)
            if repo is not None:
                repo.close()
        mlflow.log_metrics({f"{k}_seconds": v for k, v in timings.items()})
        mlflow.set_tag("skipped_stages", ",".join(skipped) or "none")
        summary = layout.reports / "summary.md"
        if summary.exists():
            mlflow.log_artifact(str(summary), artifact_path="report")
    if skipped and summary.exists():
        print(summary.read_text())
    return {"ran": timings, "skipped": skipped}


if __name__ == "__main__":
    from flows._cli import main

    main("pipeline", pipeline)

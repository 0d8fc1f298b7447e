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
(plumbing/dvc_sync.py).

``runtime.task_runner`` / ``max_workers`` / ``dask_address`` choose how every stage flow runs its
independent tasks (:func:`plumbing.runners.task_runner`); with ``dask`` and no address the pipeline starts
one ``LocalCluster`` and every stage flow uses it (:func:`plumbing.runners.shared_runner`).

The run-time plumbing this flow composes lives in ``plumbing/``: ``dvc status`` / ``dvc commit``
(plumbing.dvc_stages), remote deployments (plumbing.remote), DVC synchronisation (plumbing.dvc_sync).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlflow
from prefect import flow
from prefect.logging import get_run_logger

import flows  # noqa: F401
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
from plumbing import dvc_sync
from plumbing.dvc_stages import dvc_repo, record_stage, same_stage_params, stage_is_fresh, stage_params
from plumbing.mlflow_store import PARENT_ENV
from plumbing.remote import GPU_STAGES, deployment_name, remote_env, run_remote
from plumbing.runners import default_task_runner, runner_settings, shared_runner, task_runner
from robustprune.config import load_params
from tasks.common import load, mlflow_setup, section

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
    repo = dvc_repo(layout.root)
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
                        logger.info("stage %r -> deployment %r", stage, deployment_name(stage, pool))
                        env = remote_env(params, layout.root, parent.info.run_id)
                        if sync:  # runtime.storage: dvc (plumbing/dvc_sync.py)
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
    from plumbing.cli import main

    main("pipeline", pipeline)

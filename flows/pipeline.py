"""The whole DAG as one Prefect flow: every stage flow runs as a subflow (``python -m flows.pipeline``).

DVC is the cache of record. Before a stage runs, ``dvc status`` for that stage tells whether its code,
params and inputs changed since it last ran; an up-to-date stage is skipped (logged as a cache hit), and
a stage that ran is recorded with ``dvc commit``, so ``make run``, ``dvc repro`` and this flow share one
``dvc.lock`` and never redo each other's work. Without a DVC repository at the root (a bare copy, a
test's tmp dir) every stage runs.

With ``runtime.work_pool`` set, the GPU stages (finetune, prune, sds, evaluate, attack) are sent as deployments
to that Prefect work pool (served by ``prefect worker start --pool <name>`` on a CUDA host that sees the
same project directory); the others run in-process.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import mlflow
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
from tasks.common import PARENT_ENV, load, mlflow_setup, section

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
    return not repo.status(targets=[stage])


def run_remote(stage: str, work_pool: str, params_path: str, root: str) -> None:
    """Run a stage flow as a deployment on the GPU work pool and wait for it."""
    from prefect.deployments import run_deployment

    run = run_deployment(
        name=f"{stage}/{stage}-gpu",
        parameters={"params_path": params_path, "root": root},
        work_queue_name=None,
        timeout=None,
    )
    if not run.state or not run.state.is_completed():
        raise RuntimeError(
            f"stage {stage!r} on work pool {work_pool!r} ended {run.state.name if run.state else 'unknown'}"
        )


@flow(name="pipeline", log_prints=True)
def pipeline(params_path: str = "params.yaml", root: str = ".", force: bool = False) -> dict:
    logger = get_run_logger()
    params, layout = load(params_path, root)
    repo = _dvc_repo(layout.root)
    if repo is None:
        logger.info("no DVC repository at %s: every stage runs", layout.root)
    elif Path(params_path).resolve() != (layout.root / "params.yaml").resolve():
        logger.info(
            "params file %s is not the root params.yaml that dvc.yaml tracks: DVC bookkeeping off, every "
            "stage runs (the stages' own caches still skip finished work)",
            params_path,
        )
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
                **{f"prune.{k}": str(v) for k, v in section(params, "prune")["prune"].items()},
            }
        )
        os.environ[PARENT_ENV] = parent.info.run_id
        try:
            for stage, fn in STAGES.items():
                if repo is not None and not force and stage_is_fresh(repo, stage):
                    logger.info("cache hit: stage %r is up to date (dvc status clean), skipped", stage)
                    skipped.append(stage)
                    continue
                t0 = time.perf_counter()
                if params.runtime.work_pool and stage in GPU_STAGES:
                    logger.info("stage %r -> work pool %r", stage, params.runtime.work_pool)
                    run_remote(stage, params.runtime.work_pool, params_path, str(layout.root))
                else:
                    fn(params_path=params_path, root=str(layout.root))
                timings[stage] = time.perf_counter() - t0
                if repo is not None:
                    repo.commit(target=stage, force=True)
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

"""finetune: k variants as mapped tasks (``python -m flows.finetune``)."""

from __future__ import annotations

import mlflow
from prefect import flow, unmapped

import flows  # noqa: F401
from robustprune.checkpoints import write_json
from tasks.common import default_task_runner, load, section, stage_run
from tasks.dvc_sync import worker_sync
from tasks.finetune import finetune_variant


# One worker: on a 2-core machine concurrent variants only thrash; a GPU work pool or a Dask/Ray task
# runner (prefect-dask / prefect-ray) fans the mapped variants out across machines instead.
@flow(name="finetune", log_prints=True, task_runner=default_task_runner())
def finetune_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    with (
        worker_sync("finetune", layout.root),
        stage_run("finetune", params, layout.root, section(params, "seed", "finetune", "data.max_length")),
    ):
        futures = finetune_variant.map(unmapped(params), unmapped(layout), params.finetune.variants)
        results = {v.name: f.result() for v, f in zip(params.finetune.variants, futures, strict=True)}
        for name, m in results.items():
            mlflow.log_metrics(
                {
                    f"{name}.validation_accuracy": m["validation_accuracy"],
                    f"{name}.test_accuracy": m["test_accuracy"],
                    f"{name}.train_seconds": m["train_seconds"],
                }
            )
        write_json(layout.reports / "finetune.json", results)
    return results


if __name__ == "__main__":
    from flows._cli import main

    main("finetune", finetune_flow)

"""finetune: k variants as mapped tasks (``python -m flows.finetune``).

With ``model.finetuned`` or ``soup.ingredients`` nothing is trained: each given checkpoint is checked against
the data, given its label mapping, scored and copied to ``models/finetuned/<name>/`` (``tasks.given``),
where the soup and prune stages expect their inputs.
"""

from __future__ import annotations

import mlflow
from prefect import flow, unmapped

import flows  # noqa: F401
from plumbing.dvc_sync import worker_sync
from plumbing.runners import default_task_runner
from robustprune.checkpoints import write_json
from tasks.common import load, section, stage_run
from tasks.finetune import finetune_variant
from tasks.given import given_checkpoint, given_entries


# One worker: on a 2-core machine concurrent variants only thrash; a GPU work pool or a Dask/Ray task
# runner (prefect-dask / prefect-ray) fans the mapped variants out across machines instead.
@flow(name="finetune", log_prints=True, task_runner=default_task_runner())
def finetune_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    with (
        worker_sync("finetune", layout.root),
        stage_run(
            "finetune",
            params,
            layout.root,
            section(params, "seed", "finetune", "model.finetuned", "soup.ingredients", "data.max_length"),
        ),
    ):
        if params.dense_source == "finetune":
            futures = finetune_variant.map(unmapped(params), unmapped(layout), params.finetune.variants)
            results = {v.name: f.result() for v, f in zip(params.finetune.variants, futures, strict=True)}
        else:  # checkpoints you already have: checked, labelled, scored and copied; nothing trained
            given = given_entries(params)
            results = {
                name: given_checkpoint.with_options(task_run_name=f"finetune-given-{name}")(
                    params, layout, name, source
                )
                for name, source in given
            }
            mlflow.set_tag("given_checkpoints", ",".join(f"{n}={s}" for n, s in given)[:5000])
        for name, m in results.items():
            mlflow.log_metrics(
                {
                    f"{name}.validation_accuracy": m["validation_accuracy"],
                    f"{name}.test_accuracy": m["test_accuracy"],
                    **({f"{name}.train_seconds": m["train_seconds"]} if "train_seconds" in m else {}),
                }
            )
        write_json(layout.reports / "finetune.json", results)
    return results


if __name__ == "__main__":
    from plumbing.cli import main

    main("finetune", finetune_flow)

"""prune: every (method, sparsity) branch, block by block, resumable (``python -m flows.prune``)."""

from __future__ import annotations

import mlflow
from prefect import flow

import flows  # noqa: F401
from plumbing.dvc_sync import worker_sync
from plumbing.runners import default_task_runner
from robustprune.checkpoints import keep_only_dirs, write_json
from tasks.common import child_run, combo_name, load, section, stage_run
from tasks.prune import prune_branch


@flow(name="prune", log_prints=True, task_runner=default_task_runner())
def prune_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    results = {}
    with (
        worker_sync("prune", layout.root),
        stage_run(
            "prune",
            params,
            layout.root,
            section(params, "prune", "soup.prune_source", "calibrate.batch_size"),
        ),
    ):
        branches = {
            combo_name(method, sparsity): prune_branch.with_options(
                task_run_name=f"prune-{combo_name(method, sparsity)}"
            ).submit(params, layout, method, sparsity)
            for method, sparsity in params.prune.combos
        }
        for method, sparsity in params.prune.combos:
            name = combo_name(method, sparsity)
            branch = branches[name].result()
            metrics = branch["metrics"]
            with child_run(name, tags={"method": method, "sparsity": sparsity}):
                if branch["cached"]:
                    results[name] = metrics
                    mlflow.set_tag("cache", "hit")
                    continue
                for i, rep in enumerate(branch["blocks"]):
                    mlflow.log_metrics(
                        {"block_output_error": rep["output_error"], "block_seconds": rep["seconds"]}, step=i
                    )
                mlflow.log_params({"method": method, "sparsity": sparsity})
                mlflow.log_metrics({k: v for k, v in metrics.items() if isinstance(v, int | float)})
                head = metrics.get("head_refit")  # RAKP's head refit (prune.rakp.refit_head)
                if head:
                    mlflow.log_metrics(
                        {f"head_{k}": v for k, v in head.items() if isinstance(v, int | float)}
                    )
                mlflow.log_artifact(str(layout.pruned_model(method, sparsity) / "layers.json"))
            results[name] = metrics
        # a combination no longer in params.yaml: keep outs == params
        keep_only_dirs(layout.pruned, (combo_name(m, s) for m, s in params.prune.combos))
        write_json(layout.reports / "prune.json", results)
    return results


if __name__ == "__main__":
    from plumbing.cli import main

    main("prune", prune_flow)

"""sds: sparse-dense-sparse on top of chosen prune combinations (``python -m flows.sds``).

For each ``sds.methods`` x ``sds.sparsities`` (each a prune combination): reactivate (task), re-prune
(task); the result is ``models/sds/sds-<method>_<sparsity>/``, evaluated and attacked like every other
model. ``reports/sds.json`` records prune -> reactivate -> re-prune for the report.
"""

from __future__ import annotations

from prefect import flow

import flows  # noqa: F401
from plumbing.dvc_sync import worker_sync
from plumbing.runners import default_task_runner
from tasks.common import load, log_metrics, publish_models, section, stage_run
from tasks.sds import sds_reactivate, sds_reprune


@flow(name="sds", log_prints=True, task_runner=default_task_runner())
def sds_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    out: dict[str, dict] = {}
    with worker_sync("sds", layout.root), stage_run("sds", params, layout.root, section(params, "sds")):
        chains = []  # each combination's re-prune waits for its reactivation; combinations run in parallel
        for method, sparsity in params.sds.combos:  # on a task runner with several workers
            react = sds_reactivate.with_options(task_run_name=f"sds-reactivate-{method}-{sparsity}").submit(
                params, layout, method, sparsity
            )
            chains.append(
                sds_reprune.with_options(task_run_name=f"sds-reprune-{method}-{sparsity}").submit(
                    params, layout, method, sparsity, react
                )
            )
        for chain in chains:
            final = chain.result()
            out[final["name"]] = final
            log_metrics(
                {
                    f"{final['name']}.reactivated_accuracy": final["reactivated_accuracy"],
                    f"{final['name']}.seconds": final["seconds"],
                    f"{final['name']}.sparsity": final["measured_sparsity"],
                }
            )
        publish_models(layout, "sds", out, out)  # exactly the combinations params.yaml asks for
    return out


if __name__ == "__main__":
    from plumbing.cli import main

    main("sds", sds_flow)

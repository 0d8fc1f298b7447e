"""evaluate: clean accuracy (per example), sparsity, transferred adversarial accuracy and representation
fidelity of every model (``python -m flows.evaluate``). Runs after the attack stage: the adversarial texts that
fooled the dense model are re-scored by every model."""

from __future__ import annotations

import mlflow
from prefect import flow
from prefect.logging import get_run_logger

import flows  # noqa: F401
from plumbing.dvc_sync import worker_sync
from plumbing.runners import default_task_runner
from robustprune.checkpoints import write_json
from robustprune.stats import rate
from tasks.common import load, section, stage_run
from tasks.evaluate import (
    dense_reference,
    evaluate_model,
    models_to_evaluate,
    reference_representations,
    test_labels,
    transfer_examples,
)


@flow(name="evaluate", log_prints=True, task_runner=default_task_runner())
def evaluate_flow(params_path: str = "params.yaml", root: str = ".") -> list[dict]:
    logger = get_run_logger()
    params, layout = load(params_path, root)
    with (
        worker_sync("evaluate", layout.root),
        stage_run("evaluate", params, layout.root, section(params, "evaluate", "data.max_length")),
    ):
        models = models_to_evaluate(params, layout)
        ref = dense_reference(params, layout)
        transfer = transfer_examples(layout, ref["name"], list(params.attack.recipes))
        logger.info(
            "dense reference %s; %d transferred adversarial texts (%s)",
            ref["name"],
            len(transfer),
            ", ".join(f"{r}: {sum(t['recipe'] == r for t in transfer)}" for r in params.attack.recipes),
        )
        ref_reps = reference_representations.with_options(task_run_name=f"reference-{ref['name']}")(
            params, layout, ref
        )
        futures = [  # submitted together: several workers (runtime.task_runner) evaluate in parallel
            evaluate_model.with_options(task_run_name=f"evaluate-{m['name']}").submit(
                params, layout, m, transfer, ref_reps
            )
            for m in models
        ]
        rows = [f.result() for f in futures]
        for r in rows:
            acc = rate(r["correct"], r["total"])
            metrics = {
                f"{r['name']}.accuracy": acc.value,
                f"{r['name']}.accuracy_low": acc.low,
                f"{r['name']}.accuracy_high": acc.high,
                f"{r['name']}.sparsity": r["measured_sparsity"],
            }
            if "transfer" in r:
                t = rate(r["transfer"]["all"]["correct"], r["transfer"]["all"]["n"])
                metrics |= {f"{r['name']}.transfer_accuracy": t.value}
            if "fidelity" in r:
                metrics |= {f"{r['name']}.fidelity": r["fidelity"]["mean"]}
            mlflow.log_metrics(metrics)
        write_json(
            layout.reports / "eval.json",
            {"reference": ref["name"], "transfer": transfer, "models": rows, "labels": test_labels(layout)},
        )
    return rows


if __name__ == "__main__":
    from plumbing.cli import main

    main("evaluate", evaluate_flow)

"""evaluate: clean accuracy and sparsity of every model (``python -m flows.evaluate``)."""

from __future__ import annotations

import mlflow
from prefect import flow
from prefect.task_runners import ThreadPoolTaskRunner

import flows  # noqa: F401
from robustprune.checkpoints import write_json
from tasks.common import load, section, stage_run
from tasks.evaluate import evaluate_model, models_to_evaluate


@flow(name="evaluate", log_prints=True, task_runner=ThreadPoolTaskRunner(max_workers=1))
def evaluate_flow(params_path: str = "params.yaml", root: str = ".") -> list[dict]:
    params, layout = load(params_path, root)
    with stage_run("evaluate", params, layout.root, section(params, "evaluate", "data.max_length")):
        models = models_to_evaluate(params, layout)
        rows = [
            evaluate_model.with_options(task_run_name=f"evaluate-{m['name']}")(params, layout, m)
            for m in models
        ]
        for r in rows:
            mlflow.log_metrics(
                {f"{r['name']}.accuracy": r["accuracy"], f"{r['name']}.sparsity": r["measured_sparsity"]}
            )
        write_json(layout.reports / "eval.json", rows)
    return rows


if __name__ == "__main__":
    from flows._cli import main

    main("evaluate", evaluate_flow)

"""prepare: data splits and the pre-trained encoder (``python -m flows.prepare``)."""

from __future__ import annotations

from prefect import flow

import flows  # noqa: F401  (environment defaults before prefect is imported)
from plumbing.runners import default_task_runner
from robustprune.checkpoints import write_json
from tasks.common import load, log_metrics, section, stage_run
from tasks.prepare import prepare_data, prepare_model


@flow(name="prepare", log_prints=True, task_runner=default_task_runner())
def prepare_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    with stage_run("prepare", params, layout.root, section(params, "seed", "data", "model")):
        data = prepare_data(params, layout)
        model = prepare_model(params, layout)
        log_metrics({k: v for k, v in data.items() if isinstance(v, int | float)})
        write_json(layout.reports / "prepare.json", {"data": data, "model": model})
    return {"data": data, "model": model}


if __name__ == "__main__":
    from plumbing.cli import main

    main("prepare", prepare_flow)

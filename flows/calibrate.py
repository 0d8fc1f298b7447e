"""calibrate: the seeded calibration sample (``python -m flows.calibrate``)."""

from __future__ import annotations

from prefect import flow

import flows  # noqa: F401
from plumbing.runners import default_task_runner
from robustprune.checkpoints import write_json
from tasks.calibrate import calibrate
from tasks.common import load, log_metrics, section, stage_run


@flow(name="calibrate", log_prints=True, task_runner=default_task_runner())
def calibrate_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    with stage_run("calibrate", params, layout.root, section(params, "calibrate", "data.max_length")):
        out = calibrate(params, layout)
        log_metrics(out)
        write_json(layout.reports / "calibrate.json", out)
    return out


if __name__ == "__main__":
    from plumbing.cli import main

    main("calibrate", calibrate_flow)

"""attack_resources: build the offline attack resources (``python -m flows.attack_resources``)."""

from __future__ import annotations

from prefect import flow

import flows  # noqa: F401
from plumbing.runners import default_task_runner
from tasks.attack_resources import build_attack_resources
from tasks.common import load, log_metrics, section, stage_run


@flow(name="attack_resources", log_prints=True, task_runner=default_task_runner())
def attack_resources_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    with stage_run("attack_resources", params, layout.root, section(params, "attack.resources")):
        info = build_attack_resources(params, layout)
        flat = {k: v for k, v in info.items() if isinstance(v, int | float)}
        flat.update({f"mlm.{k}": v for k, v in info.get("mlm", {}).items() if isinstance(v, int | float)})
        log_metrics(flat)
    return info


if __name__ == "__main__":
    from plumbing.cli import main

    main("attack_resources", attack_resources_flow)

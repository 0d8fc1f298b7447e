"""soup: greedy and uniform soups (``python -m flows.soup``)."""

from __future__ import annotations

import mlflow
from prefect import flow

import flows  # noqa: F401
from robustprune.checkpoints import write_json
from tasks.common import load, section, stage_run
from tasks.soup import make_soups


@flow(name="soup", log_prints=True)
def soup_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    with stage_run(
        "soup", params, layout.root, section(params, "finetune.variants", "evaluate", "data.max_length")
    ):
        out = make_soups(params, layout)
        for kind in ("greedy", "uniform"):
            mlflow.log_metrics(
                {
                    f"{kind}.validation_accuracy": out[kind]["validation_accuracy"],
                    f"{kind}.test_accuracy": out[kind]["test_accuracy"],
                }
            )
        mlflow.set_tag("greedy_members", ",".join(out["greedy"]["members"]))
        write_json(layout.reports / "soup.json", out)
    return out


if __name__ == "__main__":
    from flows._cli import main

    main("soup", soup_flow)

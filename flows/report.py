"""report: summary.md, DVC metrics and plots, MLflow artifacts (``python -m flows.report``)."""

from __future__ import annotations

import csv
import io

import mlflow
from prefect import flow, task

import flows  # noqa: F401
from robustprune.checkpoints import read_json, write_json, write_text
from robustprune.report import markdown_summary, plot_accuracy, plot_rows
from tasks.common import Layout, load, stage_run


@task(name="report")
def build_report(layout: Layout) -> dict:
    r = layout.reports
    prepare, finetune, soup = (
        read_json(r / "prepare.json"),
        read_json(r / "finetune.json"),
        read_json(r / "soup.json"),
    )
    rows, prune = read_json(r / "eval.json"), read_json(r / "prune.json")
    summary = markdown_summary(prepare, finetune, soup, rows, prune)
    write_text(r / "summary.md", summary)
    points = plot_rows(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["method", "sparsity", "pattern", "accuracy"])
    w.writeheader()
    w.writerows(points)
    write_text(r / "plots" / "accuracy_vs_sparsity.csv", buf.getvalue())
    plot_accuracy(points, r / "plots" / "accuracy_vs_sparsity.png")
    metrics = {
        "soup": {
            k: {"validation_accuracy": v["validation_accuracy"], "test_accuracy": v["test_accuracy"]}
            for k, v in soup.items()
            if k in ("greedy", "uniform")
        },
        "variants": {k: {"test_accuracy": v["test_accuracy"]} for k, v in finetune.items()},
        "pruned": {
            x["name"]: {"accuracy": x["accuracy"], "sparsity": x["measured_sparsity"]}
            for x in rows
            if x["kind"] == "pruned"
        },
    }
    write_json(r / "metrics.json", metrics)
    return {"summary": summary, "metrics": metrics}


@flow(name="report", log_prints=True)
def report_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    with stage_run("report", params, layout.root):
        out = build_report(layout)
        for f in (
            "summary.md",
            "metrics.json",
            "plots/accuracy_vs_sparsity.png",
            "plots/accuracy_vs_sparsity.csv",
        ):
            mlflow.log_artifact(str(layout.reports / f), artifact_path="report")
    print(out["summary"])
    return out


if __name__ == "__main__":
    from flows._cli import main

    main("report", report_flow)

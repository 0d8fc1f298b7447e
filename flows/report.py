"""report: summary.md, DVC metrics and plots, MLflow artifacts (``python -m flows.report``)."""

from __future__ import annotations

import csv
import io

import mlflow
from prefect import flow, task

import flows  # noqa: F401
from robustprune.checkpoints import read_json, write_json, write_text
from robustprune.report import attack_plot, markdown_summary, plot_accuracy, plot_rows
from tasks.common import Layout, load, stage_run


def _optional(path, default):  # noqa: ANN001, ANN202
    return read_json(path) if path.exists() else default


@task(name="report")
def build_report(layout: Layout, recipes: list[str], attack_note: str = "") -> dict:
    r = layout.reports
    prepare, finetune, soup = (
        read_json(r / "prepare.json"),
        read_json(r / "finetune.json"),
        read_json(r / "soup.json"),
    )
    rows, prune = read_json(r / "eval.json"), read_json(r / "prune.json")
    sds, attack = _optional(r / "sds.json", {}), _optional(r / "attack.json", [])
    summary = markdown_summary(prepare, finetune, soup, rows, prune, sds, attack, recipes, attack_note)
    write_text(r / "summary.md", summary)
    points = plot_rows(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["method", "sparsity", "pattern", "accuracy"])
    w.writeheader()
    w.writerows(points)
    write_text(r / "plots" / "accuracy_vs_sparsity.csv", buf.getvalue())
    plot_accuracy(points, r / "plots" / "accuracy_vs_sparsity.png")
    attack_plot(attack, r / "plots" / "attack_vs_sparsity.png")
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
            if x["kind"] in ("pruned", "sds")
        },
        "attack": {
            f"{a['model']}.{a['recipe']}": {
                k: a[k]
                for k in ("original_accuracy", "accuracy_under_attack", "attack_success_rate", "avg_queries")
            }
            for a in attack
        },
    }
    write_json(r / "metrics.json", metrics)
    return {"summary": summary, "metrics": metrics}


@flow(name="report", log_prints=True)
def report_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    params, layout = load(params_path, root)
    with stage_run("report", params, layout.root):
        names = params.attacked_models()
        note = (
            f"Attacked by this run: {len(names)} model(s) ({', '.join(names)}) x {len(params.attack.recipes)} "
            f"recipe(s) on {params.attack.num_examples} seeded test examples (attack.models / attack.num_examples "
            "in params.yaml; the `paper` profile params-paper.yaml attacks every model on 1000 examples)."
        )
        out = build_report(layout, list(params.attack.recipes), note)
        for f in (
            "summary.md",
            "metrics.json",
            "plots/accuracy_vs_sparsity.png",
            "plots/accuracy_vs_sparsity.csv",
            "plots/attack_vs_sparsity.png",
        ):
            mlflow.log_artifact(str(layout.reports / f), artifact_path="report")
    print(out["summary"])
    return out


if __name__ == "__main__":
    from flows._cli import main

    main("report", report_flow)

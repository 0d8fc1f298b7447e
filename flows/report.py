"""report: summary.md (intervals and paired verdicts), DVC metrics and plots, MLflow artifacts
(``python -m flows.report``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import mlflow
from prefect import flow, task

import flows  # noqa: F401
from robustprune.checkpoints import read_json, write_json, write_text
from robustprune.report import (
    ReportInputs,
    attack_plot,
    attack_rate,
    fidelity_correlations,
    fidelity_plot,
    fidelity_points,
    markdown_summary,
    model_rate,
    plot_accuracy,
    plot_rows,
    transfer_plot,
)
from robustprune.stats import rate
from robustprune.verdicts import compare
from tasks.common import Layout, default_task_runner, load, stage_run
from tasks.tracking import log_model_runs

#: how many example perturbations per recipe the report shows
EXAMPLES_PER_RECIPE = 30


def _optional(path: Path, default):  # noqa: ANN001, ANN202
    return read_json(path) if path.exists() else default


def read_outcomes(layout: Layout, attack: list[dict]) -> tuple[dict, list[dict]]:
    """Per (model, recipe): test row -> outcome ("no words" for inputs without a word), and every record."""
    outcomes, records = {}, []
    for a in attack:
        path = layout.reports / "attacks" / a["model"] / f"{a['recipe']}.csv"
        if not path.is_file():
            continue
        with path.open(newline="") as f:
            rows = list(csv.DictReader(f))
        outcomes[(a["model"], a["recipe"])] = {
            int(r["test_row"]): ("no words" if r.get("original_prediction", "") == "" else r["outcome"])
            for r in rows
        }
        records += [{**r, "model": a["model"], "recipe": a["recipe"]} for r in rows]
    return outcomes, records


def validity_audit(
    layout: Layout, outcomes: dict, records: list[dict], options: dict | None
) -> tuple[dict, list]:
    """Issue #28: (model, ``valid:<recipe>``) -> outcomes with label-changing successes counted as failed, and
    the audit of every (model, recipe) (robustprune.attacks.validity; ``options``: ``attack.validity``)."""
    from robustprune.attacks.validity import ValidityRule, audit_all, judge_records, valid_attack_outcomes
    from robustprune.config import AttackValidityConfig
    from tasks.attack_resources import polarity_lexicons

    if not outcomes:
        return {}, []
    cfg = AttackValidityConfig(**(options or {}))
    rule = ValidityRule(cfg.vader_threshold, cfg.afinn_threshold, cfg.compound_threshold, tuple(cfg.rule))
    flags = judge_records(records, polarity_lexicons(layout), rule)
    return valid_attack_outcomes(outcomes, flags), audit_all(outcomes, flags, rule, cfg.examples)


@task(name="report")
def build_report(
    layout: Layout, recipes: list[str], attack_note: str = "", seed: int = 0, validity: dict | None = None
) -> dict:
    from robustprune.attacks.examples import examples_markdown, select_examples

    r = layout.reports
    evaluation = read_json(r / "eval.json")
    attack = _optional(r / "attack.json", [])
    outcomes, records = read_outcomes(layout, attack)
    valid, audits = validity_audit(layout, outcomes, records, validity)
    soup = read_json(r / "soup.json")
    models = evaluation["models"]
    metrics_names = ["clean", *recipes]
    if any("transfer" in m for m in models):
        metrics_names += [f"transfer:{k}" for k in models[0].get("transfer", {})]
    metrics_names += [f"valid:{rec}" for rec in recipes if valid]
    comparisons = compare(
        models, {**outcomes, **valid}, metrics_names, evaluation["reference"], soup.get("best_ingredient")
    )
    cap = _optional(r / "cap.json", None)
    cap_md = ""
    if cap:
        from robustprune.cap.report import cap_markdown

        cap_md = cap_markdown(cap, models)
    reference_records = [x for x in records if x["model"] == evaluation["reference"]] or records
    label_names = read_json(r / "prepare.json").get("data", {}).get("label_names")
    examples = select_examples(reference_records, EXAMPLES_PER_RECIPE, seed)
    inputs = ReportInputs(
        prepare=read_json(r / "prepare.json"),
        finetune=read_json(r / "finetune.json"),
        soup=soup,
        evaluation=evaluation,
        prune=read_json(r / "prune.json"),
        sds=_optional(r / "sds.json", {}),
        attack=attack,
        outcomes=outcomes,
        recipes=recipes,
        comparisons=comparisons,
        cap_md=cap_md,
        cap_seconds={k: float(v) for k, v in (cap or {}).get("training_seconds", {}).items()},
        examples_md=examples_markdown(examples, label_names=label_names) if examples else "",
        attack_note=attack_note,
        validity=[a.to_dict() for a in audits],
    )
    summary = markdown_summary(inputs)
    write_text(r / "summary.md", summary)
    points = plot_rows(models)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=["method", "sparsity", "pattern", "accuracy"])
    w.writeheader()
    w.writerows(points)
    write_text(r / "plots" / "accuracy_vs_sparsity.csv", buf.getvalue())
    plot_accuracy(points, r / "plots" / "accuracy_vs_sparsity.png")
    attack_plot(attack, r / "plots" / "attack_vs_sparsity.png")
    transfer_plot(models, evaluation["reference"], r / "plots" / "transfer_vs_sparsity.png")
    fid = fidelity_points(inputs)
    if fid:
        fidelity_plot(fid, recipes, r / "plots" / "fidelity_vs_robustness.png")
    metrics = {
        "models": {
            m["name"]: {
                "kind": m["kind"],
                "method": m["method"],
                "sparsity": m["sparsity"],
                "measured_sparsity": m["measured_sparsity"],
                "accuracy": model_rate(m).to_dict(),
                **(
                    {"transfer": {k: rate(v["correct"], v["n"]).to_dict() for k, v in m["transfer"].items()}}
                    if "transfer" in m
                    else {}
                ),
                **({"fidelity": m["fidelity"]["mean"]} if "fidelity" in m else {}),
            }
            for m in models
        },
        "attack": {
            f"{a['model']}.{a['recipe']}": {
                "accuracy_under_attack": attack_rate(outcomes[(a["model"], a["recipe"])]).to_dict()
                if (a["model"], a["recipe"]) in outcomes
                else None,
                **{k: a[k] for k in ("original_accuracy", "attack_success_rate", "avg_queries")},
            }
            for a in attack
        },
        "soup": {
            "criterion": soup.get("criterion"),
            "best_ingredient": soup.get("best_ingredient"),
            "members": soup.get("greedy", {}).get("members"),
        },
        "validity": {f"{a.model}.{a.recipe}": a.to_dict() for a in audits},
        "comparisons": [c.to_dict() for c in comparisons],
        "fidelity_correlations": fidelity_correlations(fid, recipes) if fid else [],
    }
    write_json(r / "metrics.json", metrics)
    return {"summary": summary, "metrics": metrics}


@flow(name="report", log_prints=True, task_runner=default_task_runner())
def report_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    from tasks.common import best_ingredient

    params, layout = load(params_path, root)
    with stage_run("report", params, layout.root):
        names = params.attacked_models(best_ingredient(layout))
        more = params.more_attacked_models(best_ingredient(layout))
        note = (
            f"Attacked by this run: {len(names)} model(s) ({', '.join(names)}) x {len(params.attack.recipes)} "
            f"recipe(s) on {params.attack.num_examples} seeded test examples"
            + (
                f", and {len(more)} more ({', '.join(more)}) on the first {params.attack.more.num_examples}"
                if more
                else ""
            )
            + " (attack.models / attack.num_examples / attack.more in the params file; `params-evidence.yaml` "
            "and `params-paper.yaml` attack more)."
        )
        out = build_report(
            layout, list(params.attack.recipes), note, params.attack.seed, params.attack.validity.model_dump()
        )
        for f in (
            "summary.md",
            "metrics.json",
            "plots/accuracy_vs_sparsity.png",
            "plots/accuracy_vs_sparsity.csv",
            "plots/attack_vs_sparsity.png",
            "plots/transfer_vs_sparsity.png",
            "plots/fidelity_vs_robustness.png",
        ):
            if (layout.reports / f).exists():
                mlflow.log_artifact(str(layout.reports / f), artifact_path="report")
        for key, a in out["metrics"]["validity"].items():  # issue #28: label-changing shares, valid accuracy
            for check, share in a["shares"].items():
                if share["n"]:
                    mlflow.log_metric(f"validity.{key}.{check}", share["value"])
            if a["accuracy_under_valid_attack"]["n"]:
                mlflow.log_metric(
                    f"valid.{key}.accuracy_under_attack", a["accuracy_under_valid_attack"]["value"]
                )
        for c in out["metrics"]["comparisons"]:
            mlflow.log_metric(f"diff.{c['a']}.vs.{c['b']}.{c['metric']}".replace(":", "-"), c["diff"])
        log_model_runs(params, layout)  # one MLflow run per model, sparse checkpoints registered
    print(out["summary"])
    return out


if __name__ == "__main__":
    from flows._cli import main

    main("report", report_flow)

"""The report task: summary.md (intervals and paired verdicts), metrics.json, plots, from the stages' reports
(run by ``flows.report``; ``flows.rerender_report`` renders a committed run again)."""

from __future__ import annotations

import csv
import dataclasses
import io
from pathlib import Path

from prefect import task

from robustprune.checkpoints import read_json, write_json, write_text
from robustprune.report import (
    ReportInputs,
    attack_plot,
    attack_rate,
    fidelity_correlations,
    fidelity_plot,
    fidelity_points,
    frontier_plot,
    frontier_points,
    glance_lines,
    markdown_summary,
    model_rate,
    per_class_under_attack,
    plot_accuracy,
    plot_rows,
    transfer_plot,
    transfer_rate,
)
from robustprune.verdicts import compare, is_robustness_metric, transfer_clusters
from tasks.common import Layout

#: the verdict under attack when the run recorded no labels (no degeneracy check possible)
UNKNOWN_BALANCE = "no verdict (class balance unknown: re-run evaluate)"
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


def row_labels(evaluation: dict, records: list[dict]) -> dict[int, int]:
    """Test row -> label: eval.json's labels, or (older runs) the attack CSVs' label column."""
    if evaluation.get("labels") is not None:
        return dict(enumerate(int(y) for y in evaluation["labels"]))
    return {int(r["test_row"]): int(r["label"]) for r in records if r.get("label", "") != ""}


def class_balances(models: list[dict], labels: dict[int, int], num_classes: int, min_recall: float) -> dict:
    """Per model: :class:`ClassBalance` from its predictions (or, for a binary task, its correctness and the
    labels); empty when the labels do not cover the test set."""
    from robustprune.degeneracy import class_balance, predictions_from_correct

    out = {}
    for m in models:
        n = len(m.get("correct_bits", ""))
        if not n or any(i not in labels for i in range(n)):
            continue
        y = [labels[i] for i in range(n)]
        if m.get("predictions") is not None:
            pred = m["predictions"]
        elif num_classes == 2:
            pred = predictions_from_correct([c == "1" for c in m["correct_bits"]], y, 2)
        else:
            continue
        out[m["name"]] = class_balance(y, pred, num_classes, min_recall)
    return out


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
    layout: Layout,
    recipes: list[str],
    attack_note: str = "",
    seed: int = 0,
    near_constant_recall: float = 0.1,
    min_correlation_models: int = 6,
    validity: dict | None = None,
) -> dict:
    from robustprune.attacks.examples import examples_markdown, select_examples

    r = layout.reports
    evaluation = read_json(r / "eval.json")
    attack = _optional(r / "attack.json", [])
    outcomes, records = read_outcomes(layout, attack)
    valid, audits = validity_audit(layout, outcomes, records, validity)
    soup = read_json(r / "soup.json")
    prepare = read_json(r / "prepare.json")
    models = evaluation["models"]
    label_names = prepare.get("data", {}).get("label_names") or []
    labels = row_labels(evaluation, records)
    balance = class_balances(models, labels, max(len(label_names), 2), near_constant_recall)
    metrics_names = ["clean", *recipes]
    if any("transfer" in m for m in models):
        metrics_names += [f"transfer:{k}" for k in models[0].get("transfer", {})]
    metrics_names += [f"valid:{rec}" for rec in recipes if valid]
    comparisons = compare(
        models,
        {**outcomes, **valid},
        metrics_names,
        evaluation["reference"],
        soup.get("best_ingredient"),
        balance=balance,
        transfer=evaluation.get("transfer", []),
    )
    if not balance:  # no labels in eval.json (a run before issue #23): whether a model reads its input is
        # unknown, so no robustness verdict at all rather than one that may rest on a constant predictor
        comparisons = [
            dataclasses.replace(c, verdict=UNKNOWN_BALANCE) if is_robustness_metric(c.metric) else c
            for c in comparisons
        ]
    for c in comparisons:
        if c.n_a != c.n_b or c.diff.n != min(c.n_a, c.n_b):
            print(f"pairing {c.a} vs {c.b} on {c.metric}: {c.diff.n} common rows of {c.n_a} and {c.n_b}")
    cap = _optional(r / "cap.json", None)
    cap_md = ""
    if cap:
        from robustprune.cap.report import cap_markdown

        cap_md = cap_markdown(cap, models, [n for n, b in balance.items() if b.near_constant])
    reference_records = [x for x in records if x["model"] == evaluation["reference"]] or records
    examples = select_examples(reference_records, EXAMPLES_PER_RECIPE, seed)
    inputs = ReportInputs(
        prepare=prepare,
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
        balance=balance,
        row_labels=labels,
        label_names=label_names,
        min_correlation_models=min_correlation_models,
        validity=[a.to_dict() for a in audits],
    )
    fid = fidelity_points(inputs)
    clusters = transfer_clusters(evaluation.get("transfer", []))
    metrics = {
        "models": {
            m["name"]: {
                "kind": m["kind"],
                "method": m["method"],
                "sparsity": m["sparsity"],
                "measured_sparsity": m["measured_sparsity"],
                "accuracy": model_rate(m).to_dict(),
                **(
                    {
                        "class_balance": balance[m["name"]].to_dict(),
                        "class_balance_text": balance[m["name"]].describe(label_names),
                        "near_constant": balance[m["name"]].near_constant,
                    }
                    if m["name"] in balance
                    else {}
                ),
                **(
                    {"transfer": {k: transfer_rate(m, k, clusters).to_dict() for k in m["transfer"]}}
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
                **(
                    {
                        "per_class": {
                            str(k): v.to_dict()
                            for k, v in per_class_under_attack(
                                outcomes[(a["model"], a["recipe"])], labels
                            ).items()
                        }
                    }
                    if (a["model"], a["recipe"]) in outcomes and labels
                    else {}
                ),
                **{k: a[k] for k in ("original_accuracy", "attack_success_rate", "avg_queries")},
            }
            for a in attack
        },
        "soup": {
            "criterion": soup.get("criterion"),
            "best_ingredient": soup.get("best_ingredient"),
            "members": soup.get("greedy", {}).get("members"),
        },
        "report": {
            "interval": "Tango score interval (paired), Wilson (rates), Rao-Scott for transferred texts",
            "near_constant_recall": near_constant_recall,
            "min_correlation_models": min_correlation_models,
        },
        "validity": {f"{a.model}.{a.recipe}": a.to_dict() for a in audits},
        "comparisons": [c.to_dict() for c in comparisons],
        "fidelity_correlations": [
            {k: v for k, v in c.items() if k != "values"}
            for c in fidelity_correlations(fid, recipes, min_correlation_models, seed)
        ]
        if fid
        else [],
    }
    inputs.glance = glance_lines(metrics)
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
    if outcomes:
        frontier_plot(frontier_points(inputs), r / "plots" / "robustness_frontier.png")
    transfer_plot(models, evaluation["reference"], r / "plots" / "transfer_vs_sparsity.png")
    if fid:
        fidelity_plot(fid, recipes, r / "plots" / "fidelity_vs_robustness.png", min_correlation_models)
    write_json(r / "metrics.json", metrics)
    return {"summary": summary, "metrics": metrics}

"""CAP's results for the report: :func:`summarize` builds ``reports/cap.json``, :func:`cap_markdown` renders it.

Every accuracy carries its Wilson 95% interval; the contrastive ablation and CAP-f's accuracy loss are
paired differences on the same test examples (:func:`robustprune.stats.paired_difference`): "better" /
"worse" only when the interval excludes 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from robustprune.cap.schedule import epoch_steps
from robustprune.cap.schedule import schedule as schedule_stages
from robustprune.degeneracy import class_share, predictions_from_correct
from robustprune.registry import RAKP, SPARSEGPT
from robustprune.stats import paired_difference, rate


def _rate(correct: Sequence[int]) -> dict:
    return rate(int(sum(correct)), len(correct)).to_dict()


def _label(s: float) -> str:
    return f"{s:g}"


def _share(stage: dict, labels: Sequence[int] | None) -> dict | None:
    """The stage model's most predicted test class and its share (near-constant: recall < 0.1 on a class, the
    report's rule, when the labels are known; else one class on >= 90% of the rows), from its predictions, else (a binary task) from its correctness and the labels; None when neither is kept."""
    pred = stage.get("test_predictions")
    if pred is None and labels is not None and len(labels) == len(stage.get("test_correct", ())):
        try:
            pred = predictions_from_correct(stage["test_correct"], labels)
        except ValueError:
            pred = None
    if not pred:
        return None
    known = labels is not None and len(labels) == len(pred)
    return class_share(pred, labels if known else None).to_dict()


def _stages_of(settings: dict[str, Any], n_examples: int) -> list:
    unit = epoch_steps(n_examples, settings["batch_size"]) if settings.get("length_unit") == "epochs" else 1
    return schedule_stages(
        settings["sparsities"],
        settings["warmup_steps"],
        settings["ramp_steps"],
        settings["hold_steps"],
        path=settings.get("path", "staged"),
        unit=unit,
    )


def summarize(
    settings: dict[str, Any],
    banks: dict,
    runs: dict[str, list[dict]],
    structured: list[dict],
    latency: dict | None,
) -> dict:
    """The content of ``reports/cap.json`` from the tasks' results (no per-example lists in it)."""
    dense = banks.get("dense_test_correct") or []
    labels = banks.get("test_labels")
    schedule = _stages_of(settings, banks["n"])
    out: dict[str, Any] = {
        "settings": settings,
        "schedule": [
            {
                "stage": st.index,
                "sparsity": st.final,
                "initial": st.initial,
                "warmup": st.warmup,
                "ramp": st.ramp,
                "hold": st.hold,
                "steps": st.steps,
            }
            for st in schedule
        ],
        "banks": {"examples": banks["n"], "seconds": banks["seconds"]},
        "dense": {"name": banks.get("teacher"), "accuracy": _rate(dense)} if dense else None,
        "runs": {},
        "ablation": [],
        "training_seconds": {},
    }
    for run, stages in runs.items():
        rows, cumulative = [], banks["seconds"]
        for st in stages:
            cumulative += st["train_seconds"] + st.get("snapshot_seconds", 0.0)
            rows.append(
                {
                    "name": st["name"],
                    "sparsity": st["sparsity_target"],
                    "measured_sparsity": st["measured_sparsity"],
                    "steps": st["steps"],
                    "train_seconds": st["train_seconds"],
                    "snapshot_seconds": st.get("snapshot_seconds", 0.0),
                    "cumulative_seconds": cumulative,
                    "final_loss": st["final_loss"],
                    "loss_parts": st.get("loss_parts", {}),
                    "accuracy": _rate(st["test_correct"]),
                    "predicted": _share(st, labels),
                    "epoch_snapshots": st.get("epoch_snapshots", 0),
                }
            )
            out["training_seconds"][st["name"]] = cumulative
        out["runs"][run] = rows
    main = runs.get("cap", [])
    for run, stages in runs.items():
        if run == "cap":
            continue
        for a, b in zip(main, stages, strict=False):
            d = paired_difference([bool(x) for x in a["test_correct"]], [bool(x) for x in b["test_correct"]])
            share = _share(b, labels)
            out["ablation"].append(
                {
                    "sparsity": a["sparsity_target"],
                    "a": a["name"],
                    "b": b["name"],
                    **d.to_dict(),
                    "b_predicted": share,
                    "b_near_constant": bool(share and share["near_constant"]),
                }
            )
    if dense and main:
        out["vs_dense"] = [
            {
                "name": st["name"],
                "retained": (sum(st["test_correct"]) / len(st["test_correct"])) / (sum(dense) / len(dense)),
                **paired_difference(
                    [bool(x) for x in st["test_correct"]], [bool(x) for x in dense]
                ).to_dict(),
            }
            for st in main
        ]
    if structured:
        cumulative, steps = banks["seconds"], []
        for st in structured:
            cumulative += st["importance_seconds"] + st["train_seconds"]
            steps.append(
                {
                    k: st[k]
                    for k in (
                        "name",
                        "fraction",
                        "heads",
                        "ffn_widths",
                        "heads_removed",
                        "neurons_removed",
                        "encoder_parameters",
                        "encoder_parameters_dense",
                        "encoder_parameters_removed",
                        "importance_seconds",
                        "train_seconds",
                        "steps",
                        "final_loss",
                    )
                }  # fmt: skip
                | {"accuracy": _rate(st["test_correct"]), "cumulative_seconds": cumulative}
            )
        final = structured[-1]
        out["structured"] = {"steps": steps, "final": steps[-1], "latency": latency}
        out["training_seconds"][final["name"]] = cumulative
        if dense:
            out["structured"]["vs_dense"] = paired_difference(
                [bool(x) for x in final["test_correct"]], [bool(x) for x in dense]
            ).to_dict()
    return out


def _pct(r: dict | None) -> str:
    if not r or not r.get("n"):
        return "–"
    return f"{100 * r['value']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def _pts(d: dict) -> str:
    return f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}]"


def _eval_rate(row: dict | None) -> dict | None:
    if not row or "correct" not in row or "total" not in row:
        return None
    return rate(int(row["correct"]), int(row["total"])).to_dict()


def _bits(row: dict | None) -> list[bool] | None:
    return [c == "1" for c in row["correct_bits"]] if row and row.get("correct_bits") else None


def _paired(by_name: dict[str, dict], a: str, b: str) -> dict | None:
    """A − B on the test rows from the evaluate stage's per-row correctness (today's interval), or None.
    The dense model may be named by its soup kind (cap.json's ``dense.name``: ``greedy``)."""
    if b not in by_name and f"soup-{b}" in by_name:
        b = f"soup-{b}"
    xa, xb = _bits(by_name.get(a)), _bits(by_name.get(b))
    if xa is None or xb is None or len(xa) != len(xb):
        return None
    return paired_difference(xa, xb).to_dict()


CRITERIA = {
    "magnitude": "gradual magnitude pruning (top-|W| masks under CAP's loss) — not CAP-m",
    "movement": "CAP-m (top-K of learned movement scores, straight-through; the reference's topK)",
    "soft": "CAP-soft (sigmoid threshold on movement scores plus an L1 penalty; sparsity as measured)",
}


def _g(x: float) -> str:
    return f"{x:g}"


def what_ran(cap: dict) -> str:
    """One paragraph that says exactly what the unstructured runs were: start point, teacher and banks,
    criterion, path and steps, learning rate, SnC, representation — and where it departs from the reference."""
    s = cap["settings"]
    sched = cap["schedule"]
    start = s.get("start", "finetuned")
    if start == "pretrained":
        who = (
            "Student: the pre-trained encoder with a fresh seeded head (as the reference); KD teacher and FiC bank: "
            "the fine-tuned dense soup; PrC bank: the pre-trained encoder."
        )
    else:
        who = (
            "Student: the dense soup itself, which is also the KD teacher and the FiC bank (so FiC contrasts the "
            "student with its own starting point; the reference starts the student from the pre-trained encoder); "
            "PrC bank: the pre-trained encoder."
        )
    path = s.get("path", "staged")
    steps = " + ".join(str(r["steps"]) for r in sched)
    total = sum(r["steps"] for r in sched)
    arrows = " → ".join(f"{100 * x:g}%" for x in s["sparsities"])
    if path == "separate":
        how = f"one run per sparsity ({arrows}), each from the start point: {steps} steps"
    else:
        how = f"one staged run {arrows}: {steps} steps ({total} in all)"
    warm = sched[0].get("warmup", 0) if sched else 0
    how += f" of batch {s['batch_size']}" + (f", the first {warm} dense" if warm else "")
    if s.get("length_unit") == "epochs":
        how += f" (lengths set in epochs of {cap['banks']['examples']} examples)"
    lr = (
        f"learning rate {_g(s['lr'])} (AdamW, warm-up {100 * s['warmup_ratio']:g}% then linear decay, restarted "
        f"every stage)"
    )
    if s["criterion"] != "magnitude":
        lr += f", scores {_g(s['score_lr'])}"
    snc = (
        "SnC: one snapshot at the start of every epoch after the first, train mode, warm-up included (as the "
        "reference)"
        if s.get("snapshots") == "epoch"
        else "SnC: one snapshot after each stage, eval mode (the reference: one per epoch, train mode)"
    )
    rep_ = {
        "cls": "`cls` (the pooler output after the classifier's dropout, as the reference)",
        "mean": "`mean` (masked mean of the last hidden states; the reference's scripts use `cls`)",
    }.get(s["representation"], f"`{s['representation']}`")
    w = s["weights"]
    text = (
        f"**What ran.** {who} Criterion: {CRITERIA.get(s['criterion'], s['criterion'])}; {how}; {lr}. {snc}; "
        f"representation {rep_}; modules {s['modules'] or '[]'}; loss weights ce {_g(w['ce'])}, kd {_g(w['kd'])}, "
        f"unsup {_g(w['unsup'])}, sup {_g(w['sup'])}; {s['extra_negatives']} extra negatives; "
        f"{cap['banks']['examples']} training examples in the banks."
    )
    a = s.get("ablation_settings") or {}
    diff = []
    if a.get("lr") is not None:
        diff.append(f"learning rate {_g(a['lr'])}")
    if a.get("warmup_ratio") is not None:
        diff.append(f"warm-up {100 * a['warmup_ratio']:g}%")
    if a.get("weights"):
        diff.append(f"ce {_g(a['weights']['ce'])}, kd {_g(a['weights']['kd'])}")
    ablations = [r for r in cap["runs"] if r != "cap"]
    if ablations and diff:
        text += f" The ablation runs ({', '.join(ablations)}) differ only in: {'; '.join(diff)}."
    return text


def cap_markdown(cap: dict, eval_rows: Sequence[dict] = (), near_constant: Sequence[str] = ()) -> str:
    """The report's CAP section (Markdown) from ``reports/cap.json`` and the evaluate stage's rows.

    Paired differences are recomputed from the evaluate stage's per-row correctness when it has them (so they
    use the report's interval); ``near_constant``: models that ignore their input (no "contrastive terms
    add" verdict for a pair that involves one)."""
    by_name = {r["name"]: r for r in eval_rows}
    near = set(near_constant)
    s = cap["settings"]
    lines = [
        "## CAP: contrastive pruning during fine-tuning",
        "",
        what_ran(cap) + " Test accuracy % [95% interval].",
        "",
    ]
    runs = cap["runs"]
    names = list(runs)
    others = [RAKP.name, SPARSEGPT.name]
    head = ["sparsity", *names, *others]
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for i, sp in enumerate(s["sparsities"]):
        cells = [f"{100 * sp:g}%"]
        for run in names:
            row = runs[run][i] if i < len(runs[run]) else None
            cells.append(_pct(row["accuracy"]) if row else "–")
        for m in others:
            cells.append(_pct(_eval_rate(by_name.get(f"{m}_{_label(sp)}"))))
        lines.append("| " + " | ".join(cells) + " |")
    if cap.get("dense"):
        lines += ["", f"Dense soup: {_pct(cap['dense']['accuracy'])}."]
    if cap["ablation"]:
        lines += ["", "**What the contrastive terms add** (paired, same test examples; A − B in points):", ""]
        lines += ["| A | B | A − B [95%] | verdict |", "|---|---|---|---|"]
        for row in cap["ablation"]:
            a, b = row["a"], row["b"]
            d = _paired(by_name, a, b) or row
            verdict = d["verdict"]
            collapsed = sorted(near & {a, b} | ({b} if row.get("b_near_constant") else set()))
            if collapsed:  # a collapse, not the terms: issue #26
                verdict = f"no verdict: {', '.join(collapsed)} predicts (nearly) one class"
            lines.append(f"| {a} | {b} | {_pts(d)} | {verdict} |")
        for row in cap["ablation"]:
            p = row.get("b_predicted")
            if row.get("b_near_constant") and p:
                lines += [
                    "",
                    f"{row['b']} is not a baseline: it predicts class {p['majority_class']} on "
                    f"{100 * p['share']:.1f}% of the test rows (near-constant), so {row['a']} − {row['b']} measures "
                    "its collapse, not the contrastive terms.",
                ]
    st = cap.get("structured")
    if st:
        f = st["final"]
        lines += [
            "",
            f"**CAP-f (structured, {100 * f['fraction']:g}% of heads and FFN neurons removed):** test accuracy "
            f"{_pct(f['accuracy'])}; {f['heads_removed']} heads and {f['neurons_removed']} FFN neurons removed, "
            f"{100 * f['encoder_parameters_removed']:.1f}% of the encoder's parameters.",
        ]
        if "vs_dense" in st:
            vs = _paired(by_name, f["name"], cap["dense"]["name"]) if cap.get("dense") else None
            st = {**st, "vs_dense": vs or st["vs_dense"]}
            lines.append(
                f"Against the dense soup: {_pts(st['vs_dense'])} points ({st['vs_dense']['verdict']})."
            )
        lat = st.get("latency")
        if lat:
            lines += ["", f"CPU latency (median, {lat['threads']} threads, torch.utils.benchmark):", ""]
            lines += ["| batch | tokens | dense ms | CAP-f ms | speed-up |", "|---|---|---|---|---|"]
            for bsz, r in lat["batches"].items():
                lines.append(
                    f"| {bsz} | {r['tokens']} | {r['dense_ms']:.2f} | {r['cap_f_ms']:.2f} | {r['speedup']:.2f}× |"
                )
    cost = cap.get("training_seconds", {})
    if cost:
        order = [r["name"] for rows in runs.values() for r in rows] + ([st["final"]["name"]] if st else [])
        lines += ["", "Training cost, seconds (banks + every stage up to the model; the report's cost column): "
                  + ", ".join(f"{k} {cost[k]:.0f}" for k in order if k in cost) + "."]  # fmt: skip
    lines += ["", *_targets(cap, by_name)]
    return "\n".join(lines) + "\n"


def _targets(cap: dict, by_name: dict[str, dict]) -> list[str]:
    """CAP's targets (docs/cap.md), checked against the data: CAP 87.5% >= RAKP 87.5%, CAP 90% keeps >= 90%
    of the soup's accuracy, CAP-f 50% speed-up >= 1.5x (batch 32) and >= 1.3x (batch 1) at <= 3 points lost."""
    out = ["Targets:"]
    main = {r["sparsity"]: r for r in cap["runs"].get("cap", [])}
    r875, rakp = main.get(0.875), _eval_rate(by_name.get("rakp_0.875"))
    if r875 and rakp:
        ok = r875["accuracy"]["value"] >= rakp["value"]
        a, b = by_name.get("cap_0.875", {}), by_name.get("rakp_0.875", {})
        paired, status = "", "met" if ok else "not met"
        if a.get("correct_bits") and b.get("correct_bits"):
            d = paired_difference(
                [c == "1" for c in a["correct_bits"]], [c == "1" for c in b["correct_bits"]]
            )
            paired = f"; paired difference on the same test rows {d.pts()}: {d.verdict}"
            # the verdict decides, not the point estimate: equal within noise is consistent with >=
            status = {"better": "met", "worse": "not met"}.get(
                d.verdict, "not contradicted (the paired interval includes zero)"
            )
        out.append(
            f"- CAP 87.5% {_pct(r875['accuracy'])} vs RAKP 87.5% {_pct(rakp)}{paired}; "
            f"target CAP ≥ RAKP: {status}."
        )
    r90 = main.get(0.9)
    dense_name = (cap.get("dense") or {}).get("name")
    if r90 and cap.get("dense"):
        ret = r90["accuracy"]["value"] / cap["dense"]["accuracy"]["value"]
        d = _paired(by_name, r90["name"], dense_name) if dense_name else None
        if d is None:
            out.append(
                f"- CAP 90% keeps {100 * ret:.1f}% of the soup's accuracy (target ≥ 90%): not judged (no per-row data)."
            )
        else:
            # keeping >= 90% of the soup's accuracy = losing at most 10% of it; judged by the paired interval
            allowed = -0.1 * cap["dense"]["accuracy"]["value"]
            status = (
                "met"
                if d["low"] >= allowed
                else "not met"
                if d["high"] < allowed
                else "not shown (the interval straddles the bound)"
            )
            out.append(
                f"- CAP 90% keeps {100 * ret:.1f}% of the soup's accuracy; paired difference {_pts(d)} points against "
                f"the allowed loss {100 * allowed:+.1f}: target ≥ 90% {status}."
            )
    st = cap.get("structured")
    if st and st.get("latency"):
        sp = {int(k): v["speedup"] for k, v in st["latency"]["batches"].items()}
        vs = (_paired(by_name, st["final"]["name"], dense_name) if dense_name else None) or st.get("vs_dense")
        loss = -vs["diff"] if vs else None
        parts = []
        if 32 in sp:
            parts.append(f"batch 32 {sp[32]:.2f}× (≥ 1.5×: {'met' if sp[32] >= 1.5 else 'not met'})")
        if 1 in sp:
            parts.append(f"batch 1 {sp[1]:.2f}× (≥ 1.3×: {'met' if sp[1] >= 1.3 else 'not met'})")
        if loss is not None:
            what = f"{100 * loss:.1f} points lost" if loss > 0 else f"{-100 * loss:.1f} points gained"
            ok = "met" if vs["low"] >= -0.03 else "not met" if vs["high"] < -0.03 else "not shown"
            parts.append(f"{what}, paired {_pts(vs)} (≤ 3 lost, judged by the interval: {ok})")
        out.append("- CAP-f: " + "; ".join(parts) + ".")
    return out if len(out) > 1 else []

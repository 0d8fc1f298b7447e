"""The report: one markdown summary with intervals and paired verdicts, DVC metrics, and plots.

Pure functions over the stages' JSON outputs (and the per-example attack outcomes); the flow decides where
files go. Every accuracy carries its 95% Wilson interval; every comparison is a paired difference on the same
examples with its exact interval and verdict (robustprune.verdicts, robustprune.stats): "better" or "worse"
only when the interval excludes 0, else "no measurable difference". Nothing here is written by hand.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from robustprune import registry
from robustprune.config import parse_sparsity
from robustprune.degeneracy import ClassBalance
from robustprune.stats import BETTER, WORSE, Rate, clustered_rate, rate, rate_of, spearman
from robustprune.verdicts import (
    CAP_VS_RAKP,
    MATCHED,
    NOT_JUDGED,
    RELATIONS,
    SOUP_VS_BEST,
    VS_SPARSEGPT,
    Comparison,
    attack_flags,
    transfer_clusters,
)


def sparsity_value(label: str) -> float:
    return parse_sparsity(label)[0]


def _pct(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"


def md_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> list[str]:
    """A Markdown table's lines: the ``header`` cells, the ``|---|`` rule, then one line a row (each cell as
    ``str`` writes it, as an f-string would)."""
    return [_md_row(header), "|" + "---|" * len(header), *(_md_row(r) for r in rows)]


def _md_row(cells: Sequence[object]) -> str:
    return "| " + " | ".join(map(str, cells)) + " |"


RECIPE_TITLES = registry.RECIPE_TITLES
#: methods whose headline comparisons with the reference method are the clean ones only (registry)
CLEAN_ONLY_HEADLINE = tuple(m.name for m in registry.METHODS.values() if not m.headline_robustness)


def metric_title(metric: str) -> str:
    """``clean`` -> "clean", ``textfooler`` -> "under TextFooler", ``transfer:all`` -> "transferred (all)",
    ``valid:textfooler`` -> "under TextFooler, valid attacks only"."""
    if metric == "clean":
        return "clean"
    if metric.startswith("transfer:"):
        r = metric.removeprefix("transfer:")
        return f"transferred ({'all recipes' if r == 'all' else RECIPE_TITLES.get(r, r)})"
    if metric.startswith("valid:"):  # robustprune.attacks.validity: label-changing successes count as failed
        r = metric.removeprefix("valid:")
        return f"under {RECIPE_TITLES.get(r, r)}, valid attacks only"
    return f"under {RECIPE_TITLES.get(metric, metric)}"


@dataclass
class ReportInputs:
    """What the encoder report reads: the stages' JSON outputs and the per-example attack outcomes."""

    prepare: dict
    finetune: dict
    soup: dict
    evaluation: dict  # reports/eval.json: {"reference", "transfer", "models"}
    prune: dict
    sds: dict = field(default_factory=dict)
    attack: Sequence[dict] = ()  # reports/attack.json rows
    outcomes: Mapping[tuple[str, str], Mapping[int, str]] = field(default_factory=dict)
    recipes: Sequence[str] = ()
    comparisons: Sequence[Comparison] = ()
    cap_md: str = ""
    # CAP model -> seconds of training that produced it (cumulative over the staged run; cap.json)
    cap_seconds: Mapping[str, float] = field(default_factory=dict)
    examples_md: str = ""
    attack_note: str = ""
    # per model: does it read its input (robustprune.degeneracy); empty when labels were not recorded
    balance: Mapping[str, ClassBalance] = field(default_factory=dict)
    # test row -> label (per-class accuracy under attack)
    row_labels: Mapping[int, int] = field(default_factory=dict)
    label_names: Sequence[str] = ()
    min_correlation_models: int = 6
    glance: Sequence[str] = ()  # "Verdicts at a glance", generated from metrics.json (glance_lines)

    def near_constant(self, name: str) -> bool:
        b = self.balance.get(name)
        return b is not None and b.near_constant

    def mark(self, name: str) -> str:
        """A model's name, with † when it is near-constant (no robustness verdict)."""
        return f"{name} †" if self.near_constant(name) else name

    # robustprune.attacks.validity.ValidityAudit.to_dict() per (model, recipe)
    validity: Sequence[Mapping] = ()

    @property
    def models(self) -> list[dict]:
        return list(self.evaluation.get("models", []))

    @property
    def reference(self) -> str:
        return self.evaluation.get("reference", "soup-greedy")


def model_rate(model: Mapping) -> Rate:
    return rate(model["correct"], model["total"])


def attack_rate(outcomes: Mapping[int, str]) -> Rate:
    f = attack_flags(outcomes)
    return rate(sum(f.values()), len(f))


def markdown_summary(x: ReportInputs) -> str:
    """reports/summary.md."""
    d = x.prepare.get("data", {})
    lines = ["# robustprune summary", ""]
    lines += [
        f"Data: {d.get('train_size')} train / {d.get('validation_size')} validation / {d.get('test_size')} test "
        f"examples, labels {d.get('label_names')}. Model: `{x.prepare.get('model', {}).get('model')}`. "
        f"Dense reference (the model that is pruned): `{x.reference}`.",
        "",
        how_to_read(x),
        "",
    ]
    lines += ["## Verdicts at a glance", "", *(x.glance or headline(x)[2:])]
    lines += degeneracy_section(x)
    lines += ingredients_section(x)
    lines += clean_section(x)
    lines += sds_table(x.sds, x.models)
    if x.cap_md:
        lines += ["", x.cap_md.rstrip()]
    lines += attack_section(x)
    lines += validity_section(x)
    lines += transfer_section(x)
    lines += verdict_section(x.comparisons, x.mark)
    lines += fidelity_section(x)
    if x.examples_md:
        lines += ["", "## Example perturbations (original → perturbed, changed words in bold)", ""]
        lines += [x.examples_md.rstrip()]
    lines += attack_cost_table(x.attack)
    lines += block_table(x.prune)
    lines += plots_section()
    lines.append("")
    return "\n".join(lines)


#: every plot the report stage writes to reports/plots/, and how to read it
PLOTS = {
    "accuracy_vs_sparsity.png": "clean test accuracy against sparsity, one line per one-shot method, the dense "
    "soup at 0; hollow squares are N:M patterns (their data: accuracy_vs_sparsity.csv)",
    "attack_vs_sparsity.png": "accuracy under each attack against sparsity, with 95% intervals, one panel per "
    "recipe; the dotted line is the dense soup",
    "robustness_frontier.png": "accuracy under each attack against clean accuracy, each attacked model a point "
    "with both intervals, one line per method; hollow points are near-constant models (no robustness verdict). "
    "Read robustness at matched clean accuracy here, not at matched sparsity",
    "transfer_vs_sparsity.png": "accuracy on the adversarial texts that fooled the dense reference, re-scored "
    "by every pruned model, against sparsity (intervals resample source rows)",
    "fidelity_vs_robustness.png": "each model's representation fidelity to the dense model against its "
    "transferred accuracy and accuracy under each attack, with Spearman's ρ and its permutation p in the titles",
}


def plots_section() -> list[str]:
    """The report's last section: what each file in reports/plots/ shows."""
    return ["", "## Plots (reports/plots/)", ""] + [f"- `{name}`: {text}." for name, text in PLOTS.items()]


def how_to_read(x: ReportInputs) -> str:
    """The report's reading guide: which interval, which test, which rule, and the near-constant rule."""
    text = (
        "How to read this report: every accuracy is a percentage with its 95% Wilson interval in brackets; "
        "every comparison is a **paired** difference on the same examples (A − B in points) with Tango's 95% "
        "score interval for paired proportions (Tango 1998; its exact coverage stays ≥ 0.93 over the grid of "
        "`benchmarks/results/interval_coverage.json`) and the score test's p (McNemar's statistic, which "
        'agrees with the interval); the verdict is "better" or "worse" only when that interval excludes 0, '
        'otherwise "no measurable difference". Transferred adversarial texts come several to a test row: their '
        "intervals are Rao-Scott adjusted for that clustering. `mde` is the smallest difference the run could "
        "have declared given how many examples the two models disagree on (– : none could)."
    )
    if not x.balance:
        return text + " (Class balance unavailable: this run's eval.json records no labels.)"
    thr = next(iter(x.balance.values())).min_recall
    return text + (
        f" A model marked † is **near-constant** (recall below {100 * thr:g}% on some class: it barely reads "
        "its input) and gets no robustness verdict: its accuracy under attack is the share of its one class "
        "among the rows it happens to get right, not robustness. Its clean-accuracy verdicts stand."
    )


def _verdict_md(c: Comparison) -> str:
    v = c.verdict
    return f"**{v}**" if v in (BETTER, WORSE) else v


def _cmp_line(c: Comparison) -> str:
    return (
        f"{c.a} {metric_title(c.metric)}: {c.a_rate.pct()} vs {c.b} {c.b_rate.pct()}, "
        f"difference {c.diff.pts()}, p = {c.diff.p_value:.3g}: {_verdict_md(c)}"
    )


def headline(x: ReportInputs) -> list[str]:
    """The answers first: does the soup add robustness; does each method keep accuracy and robustness at the
    highest sparsity; one line each, computed."""
    out = ["## Verdicts at a glance", ""]
    soup = [c for c in x.comparisons if c.relation == SOUP_VS_BEST]
    for c in soup:
        out.append(f"- Robust soup: {_cmp_line(c)}.")
    pruned = [m for m in x.models if m["kind"] == "pruned" and ":" not in m["sparsity"]]
    top = max((sparsity_value(m["sparsity"]) for m in pruned), default=None)
    if top is not None:
        label = f"{top:g}"
        for c in x.comparisons:
            a = next((m for m in x.models if m["name"] == c.a), None)
            if a is None or a["sparsity"] != label or c.relation != VS_SPARSEGPT:
                continue
            if c.metric.startswith("transfer:") and c.metric != "transfer:all":
                continue
            if a["method"] in CLEAN_ONLY_HEADLINE and c.metric != "clean":
                continue  # the headline: the comparisons docs/robustness.md names; the rest is below
            out.append(f"- {_cmp_line(c)}.")
    if len(out) == 2:
        out.append("- (no comparison available: see the sections below)")
    return out


_SHORT = {BETTER: "better", WORSE: "worse", NOT_JUDGED: "no verdict", "no measurable difference": "n.s."}
_SHORT["no verdict (class balance unknown: re-run evaluate)"] = "no verdict (class balance unknown)"


def _metric_short(metric: str) -> str:
    if metric == "clean":
        return "clean"
    if metric.startswith("transfer:"):
        r = metric.removeprefix("transfer:")
        return "transferred" if r == "all" else f"transferred {RECIPE_TITLES.get(r, r)}"
    if metric.startswith("valid:"):
        r = metric.removeprefix("valid:")
        return f"valid {RECIPE_TITLES.get(r, r)}"
    return RECIPE_TITLES.get(metric, metric)


def _pts_d(c: Mapping) -> str:
    return f"{100 * c['diff']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}]"


def _glance_metrics(comps: Sequence[Mapping]) -> str:
    """``clean +10.6 [+5.1, +15.7] better; TextFooler −29.6 [..] no verdict; ...`` (transfer: all only)."""
    out = []
    for c in comps:
        if c["metric"].startswith("transfer:") and c["metric"] != "transfer:all":
            continue
        v = _SHORT.get(c["verdict"], c["verdict"])
        out.append(
            f"{_metric_short(c['metric'])} {_pts_d(c)} {f'**{v}**' if v in ('better', 'worse') else v}"
        )
    return "; ".join(out).removesuffix(".")  # the caller ends the sentence


def glance_lines(metrics: Mapping) -> list[str]:
    """ "Verdicts at a glance", generated from ``metrics.json`` alone (the README's answer is the same list,
    ``make readme-table``): the near-constant models; the soup against its best ingredient; each method
    against SparseGPT at the highest sparsity; each attacked method against the baseline of nearest clean
    accuracy; CAP against RAKP. Every verdict is the paired interval's (or "no verdict" with a near-constant
    model); "n.s." = no measurable difference."""
    models = metrics.get("models", {})
    comps = metrics.get("comparisons", [])
    out = []
    near = [n for n, m in models.items() if m.get("near_constant")]
    if near:
        out.append(
            "- Near-constant (barely read their input; no robustness verdict): "
            + "; ".join(f"`{n}` ({models[n].get('class_balance_text', '')})" for n in near)
            + "."
        )
    elif any("class_balance" in m for m in models.values()):
        out.append("- No model is near-constant: every model gets its robustness verdicts.")

    def group(relation: str) -> dict[tuple[str, str], list[Mapping]]:
        g: dict[tuple[str, str], list[Mapping]] = {}
        for c in comps:
            if c["relation"] == relation:
                g.setdefault((c["a"], c["b"]), []).append(c)
        return g

    def acc(name: str) -> str:
        a = models.get(name, {}).get("accuracy")
        return "" if not a else f" ({100 * a['value']:.1f}% clean)"

    def rows(c: Sequence[Mapping]) -> str:
        attacked = [x for x in c if x["metric"] not in ("clean",) and not x["metric"].startswith("transfer:")]
        return f", {attacked[0]['n']} attacked rows" if attacked else ""

    for (a, b), c in group(SOUP_VS_BEST).items():
        out.append(f"- Robust soup `{a}` − its best ingredient `{b}`{rows(c)}: {_glance_metrics(c)}.")
    tops = [
        parse_sparsity(m["sparsity"])[0]
        for m in models.values()
        if m.get("kind") == "pruned" and ":" not in str(m.get("sparsity"))
    ]
    if tops:
        top = f"{max(tops):g}"
        for (a, b), c in group(VS_SPARSEGPT).items():
            if models.get(a, {}).get("sparsity") != top:
                continue
            if models.get(a, {}).get("method") in CLEAN_ONLY_HEADLINE:
                c = [x for x in c if x["metric"] == "clean"]
            out.append(f"- `{a}` − `{b}`, same sparsity{rows(c)}: {_glance_metrics(c)}.")
    under_attack = [x for x in comps if x["metric"] != "clean" and not x["metric"].startswith("transfer:")]
    attacked_pairs = {(x["a"], x["b"]) for x in under_attack}
    for (a, b), c in group(MATCHED).items():
        if (a, b) not in attacked_pairs:
            continue  # the glance shows matched pairs that were attacked; the rest is in "Paired comparisons"
        out.append(
            f"- `{a}`{acc(a)} − `{b}`{acc(b)}, the baseline of nearest clean accuracy{rows(c)}: "
            f"{_glance_metrics(c)}."
        )
    for (a, b), c in group(CAP_VS_RAKP).items():
        if (a, b) in attacked_pairs:
            out.append(f"- `{a}` − `{b}`, same sparsity{rows(c)}: {_glance_metrics(c)}.")
    if not out:
        out.append("- (no comparison available: see the sections below)")
    return out


def degeneracy_section(x: ReportInputs) -> list[str]:
    """Per model: recall per class, share of rows predicted as each class, Cohen's κ, near-constant."""
    if not x.balance:
        return []
    k = len(next(iter(x.balance.values())).recall)
    names = list(x.label_names) + [str(i) for i in range(len(x.label_names), k)]
    thr = next(iter(x.balance.values())).min_recall
    lines = [
        "",
        "## Does each model read its input? (clean test set)",
        "",
        f"Recall per class and the share of test rows predicted as each class; Cohen's κ against the labels "
        f"(0 = no better than predicting by the class shares). **near-constant** = recall below {100 * thr:g}% "
        "on some class (`report.near_constant_recall`): such a model gets no robustness verdict anywhere in "
        "this report.",
        "",
    ]
    header = ["model", *(f"recall {n} %" for n in names), *(f"predicted {n} %" for n in names)]
    rows = []
    for m in x.models:
        b = x.balance.get(m["name"])
        if b is not None:
            rows.append(
                [m["name"], *(_pct(r) for r in b.recall), *(_pct(r) for r in b.predicted_share)]
                + [f"{b.kappa:.2f}", "**yes** †" if b.near_constant else "no"]
            )
    return lines + md_table([*header, "κ", "near-constant"], rows)


def given_section(x: ReportInputs) -> list[str]:
    """``model.finetuned``: no ingredients and no soup, the given classifier is the dense reference."""
    by_eval = {m["name"]: m for m in x.models}
    lines = [
        "",
        "## Dense model",
        "",
        "The classifier given as `model.finetuned` is pruned as it is: nothing was fine-tuned, no soup was made.",
        "",
    ]
    rows = []
    for name, m in x.finetune.items():
        ev = by_eval.get(name)
        test = model_rate(ev).pct(2) if ev else _pct(m["test_accuracy"])
        rows.append([name, f"`{m.get('source')}`", _pct(m["validation_accuracy"]), test])
    return lines + md_table(["model", "source", "validation acc %", "test acc % [95% CI]"], rows)


def _adversarial_recipe(m: dict) -> str:
    """How an ingredient was made robust (FreeLB, input-space augmentation, A2T), for the ingredient table."""
    out = ""
    if adv := m.get("adversarial"):
        bound = "unbounded" if not adv["max_norm"] else f"ε={adv['max_norm']:g}"
        shared = ", shared dropout" if adv.get("share_dropout") else ""
        out += f", FreeLB K={adv['steps']} {bound} a={adv['step_size']:g}{shared}"
    if (aug := m.get("augment")) and "fraction" in aug:
        out += f", augment {aug['copies']}x{100 * aug['fraction']:.0f}% of words"
    if (a2t := m.get("a2t")) and "num_train_adv_examples" in a2t:
        n = a2t["num_train_adv_examples"]
        share = f"{100 * n:g}%" if isinstance(n, float) else ("all" if n == -1 else f"{n}")
        out += f", A2T {share} adversarial every {a2t['attack_epoch_interval']} ep"
    return out


def _robustness_cell(h: dict) -> str:
    """A greedy-history row's validation robustness with its Wilson interval (issue #24) when recorded."""
    if h.get("robustness_low") is None:
        return _pct(h.get("robustness"))
    return f"{_pct(h['robustness'])} [{_pct(h['robustness_low'])}, {_pct(h['robustness_high'])}]"


def ingredients_section(x: ReportInputs) -> list[str]:
    soup = x.soup
    if soup.get("skipped"):
        return given_section(x)
    by_eval = {m["name"]: m for m in x.models}
    ing = soup.get("ingredients", {})
    robust = soup.get("criterion") == "robustness"
    att = soup.get("attack") or {}
    lines = [
        "",
        "## Ingredients and soups",
        "",
        f"Soup criterion: **{soup.get('criterion', 'accuracy')}**"
        + (
            f" (validation accuracy under {RECIPE_TITLES.get(att.get('recipe'), att.get('recipe'))} on "
            f"{att.get('num_examples')} seeded validation examples; a candidate is kept when it does not lower "
            f"it and keeps clean validation accuracy within {100 * soup.get('max_accuracy_drop', 0):.1f} points "
            "of the current soup's)"
            if robust
            else " (validation accuracy; a candidate is kept when it does not lower it)"
        )
        + f". Best single ingredient by this criterion: `{soup.get('best_ingredient', '–')}`.",
        "",
        "| model | recipe | validation acc % | validation under attack % | test acc % [95% CI] | train s (s/step) |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in x.finetune.items():
        if m.get("given"):  # soup.ingredients: a checkpoint fine-tuned elsewhere, no recipe or time here
            recipe, train = f"given: `{m.get('source')}`", "–"
        else:
            recipe = f"{m.get('optimizer', 'adamw')} lr {m['learning_rate']:g}, {m['epochs']:g} ep, seed {m['seed']}"
            train = f"{m['train_seconds']:.0f} ({m.get('seconds_per_step', float('nan')):.2f})"
        if m.get("weight_decay") is not None:
            recipe += f", wd {m['weight_decay']:g}"
        recipe += _adversarial_recipe(m)
        rob = ing.get(name, {}).get("robustness")
        ev = by_eval.get(name)
        lines.append(
            f"| {name} | {recipe} | {_pct(m['validation_accuracy'])} | {_pct(rob)} | "
            f"{model_rate(ev).pct(2) if ev else _pct(m['test_accuracy'])} | {train} |"
        )
    for kind in ("greedy", "uniform"):
        s = soup.get(kind)
        if s:
            ev = by_eval.get(f"soup-{kind}")
            lines.append(
                f"| soup-{kind} | members: {', '.join(s['members'])} | {_pct(s['validation_accuracy'])} | "
                f"{_pct(s.get('validation_robustness'))} | "
                f"{model_rate(ev).pct(2) if ev else _pct(s['test_accuracy'])} | – |"
            )
    history = soup.get("greedy", {}).get("history", [])
    if history:
        header = ["step", "candidate", "soup members if kept", "validation acc %"]
        header += ["validation under attack % [95% CI]", "kept"]
        rows = [
            [i, h["candidate"], ", ".join(h.get("members", [])), _pct(h.get("accuracy"))]
            + [_robustness_cell(h), "yes" if h.get("kept") else "no"]
            for i, h in enumerate(history)
        ]
        lines += ["", "Greedy history (in ranking order):", "", *md_table(header, rows)]
    return lines


def clean_section(x: ReportInputs) -> list[str]:
    models = x.models
    ref = next((m for m in models if m["name"] == x.reference), None)
    pruned = [m for m in models if m["kind"] == "pruned"]
    methods = list(dict.fromkeys(m["method"] for m in pruned))
    sparsities = list(dict.fromkeys(m["sparsity"] for m in pruned))
    by = {(m["method"], m["sparsity"]): m for m in pruned}
    lines = [
        "",
        "## Clean test accuracy (%, 95% CI)",
        "",
        f"Dense reference `{x.reference}`: {model_rate(ref).pct(2) if ref else '–'} on {ref['total'] if ref else '?'} "
        "test examples (every cell below: n = the same test rows)."
        + (
            " † near-constant (no robustness verdict)."
            if any(x.near_constant(m["name"]) for m in models)
            else ""
        ),
        "",
    ]

    def cell(method: str, s: str) -> str:
        if (method, s) not in by:
            return "–"
        return model_rate(by[(method, s)]).pct(1) + (" †" if x.near_constant(by[(method, s)]["name"]) else "")

    lines += md_table(
        ["method", *sparsities], ([method, *(cell(method, s) for s in sparsities)] for method in methods)
    )
    rows = []
    for m in models:
        if m["kind"] not in ("pruned", "sds", "cap"):
            continue
        secs = {**x.prune, **(x.sds or {})}.get(m["name"], {}).get(
            "prune_seconds", x.cap_seconds.get(m["name"])
        )
        rows.append(
            [
                x.mark(m["name"]),
                m["method"],
                m["sparsity"],
                _pct(m["measured_sparsity"]),
                model_rate(m).pct(2),
            ]
            + ["–" if secs is None else f"{secs:.1f}"]
        )
    lines += [""] + md_table(
        [
            "model",
            "method",
            "target sparsity",
            "measured sparsity %",
            "accuracy % [95% CI]",
            "prune / train time s",
        ],
        rows,
    )
    if x.cap_seconds:
        lines += [
            "",
            "Cost: one-shot methods (magnitude, Wanda, SparseGPT, RAKP) and SDS show their pruning time; CAP prunes "
            "while it fine-tunes, so its models show the training time that produced them (cumulative over the "
            "staged run: the 87.5% model includes the 50% and 75% stages).",
        ]
    lines += ["", "![accuracy vs sparsity](plots/accuracy_vs_sparsity.png)"]
    return lines


def per_class_under_attack(outcomes: Mapping[int, str], row_labels: Mapping[int, int]) -> dict[int, Rate]:
    """Accuracy under attack among the attacked rows of each true class."""
    f = attack_flags(outcomes)
    out: dict[int, list[bool]] = {}
    for row, ok in f.items():
        if row in row_labels:
            out.setdefault(row_labels[row], []).append(ok)
    return {k: rate_of(v) for k, v in sorted(out.items())}


def attack_section(x: ReportInputs) -> list[str]:
    if not x.attack:
        return ["", "## Robustness: accuracy under attack", "", "No model was attacked in this run."]
    recipes = list(x.recipes) or list(dict.fromkeys(r["recipe"] for r in x.attack))
    by = {(r["model"], r["recipe"]): r for r in x.attack}
    models = list(dict.fromkeys(r["model"] for r in x.attack))
    taggers = sorted({str(r.get("pos_tagger")) for r in x.attack if r.get("pos_tagger")})
    sizes: dict[int, list[str]] = {}
    for m in models:
        first = next(r for r in x.attack if r["model"] == m)  # every model in `models` has a row
        sizes.setdefault(int(first.get("num_examples") or 0), []).append(m)
    if len(sizes) == 1:
        rows_text = f"The same {next(iter(sizes))} seeded test examples for every model and recipe."
    else:  # attack.more: the first rows of the same seeded order for some models
        rows_text = (
            "Seeded test examples per model (the smaller sets are the first rows of the same seeded order, so "
            "comparisons pair on them): "
            + "; ".join(f"{n} for {', '.join(ms)}" for n, ms in sorted(sizes.items(), reverse=True))
            + "."
        )
    lines = [
        "",
        "## Robustness: accuracy under attack (%, 95% CI)",
        "",
        f"{rows_text} Cell: **accuracy under attack [CI]** "
        "(= failed attacks / N) · attack success rate % · mean queries. textattack's definitions; inputs with no "
        "word to perturb are left out; n = the model's attacked rows (column 2). A model that (nearly) ignores "
        "its input cannot be attacked: its accuracy under attack approaches its clean accuracy on the class it "
        "predicts; such models are marked † and get no robustness verdict."
        + (f" TextFooler's part-of-speech check: {', '.join(taggers)}." if taggers else ""),
        "",
    ]

    def cell(m: str, rec: str) -> str:
        r, o = by.get((m, rec)), x.outcomes.get((m, rec))
        if r is None or o is None:
            return "–"
        return f"**{attack_rate(o).pct(1)}** · {_pct(r['attack_success_rate'])} · {r['avg_queries']:.0f}"

    rows = []
    for m in models:
        first = next(r for r in x.attack if r["model"] == m)
        rows.append(
            [x.mark(m), first.get("num_examples", "?"), first["method"], first["sparsity"]]
            + [_pct(first["original_accuracy"]), *(cell(m, rec) for rec in recipes)]
        )
    header = ["model", "n", "method", "sparsity", "clean on attacked rows %"]
    lines += md_table(header + [RECIPE_TITLES.get(r, r) for r in recipes], rows)
    if x.row_labels:
        names = list(x.label_names)
        lines += [
            "",
            "Accuracy under attack per true class (%, 95% CI; the rows of that class among the model's attacked "
            "rows). A model whose robustness sits in one class is predicting that class, not resisting:",
            "",
        ]
        rows = []
        for m in models:
            for rec in recipes:
                o = x.outcomes.get((m, rec))
                if o is None:
                    continue
                pc = per_class_under_attack(o, x.row_labels)
                cells = [f"{pc[k].pct(1)} (n = {pc[k].n})" if k in pc else "–" for k in range(len(names))]
                rows.append([x.mark(m), RECIPE_TITLES.get(rec, rec), *cells])
        lines += md_table(["model", "recipe", *(f"class {n}" for n in names)], rows)
    if x.attack_note:
        lines += ["", x.attack_note]
    lines += [
        "",
        "![accuracy under attack vs sparsity](plots/attack_vs_sparsity.png)",
        "",
        "Accuracy under attack against clean accuracy (each model a point with its intervals, one line per "
        "method; hollow markers: near-constant) — robustness compared at matched accuracy, not only at matched "
        "sparsity:",
        "",
        "![robustness-accuracy frontier](plots/robustness_frontier.png)",
    ]
    return lines


def transfer_rate(model: Mapping, key: str, clusters: Mapping[str, list[int]]) -> Rate:
    """Transferred accuracy with a Rao-Scott interval over source rows (a plain Wilson one without them)."""
    t = model["transfer"][key]
    source = clusters.get(key)
    if source is None or len(source) != t["n"] or "bits" not in t:
        return rate(t["correct"], t["n"])
    return clustered_rate([c == "1" for c in t["bits"]], source)


_VALIDITY_CHECKS = {
    "vader": "VADER word flip",
    "afinn": "AFINN word flip",
    "wordnet": "WordNet antonym",
    "compound": "VADER compound flip",
}


def validity_section(x: ReportInputs) -> list[str]:
    """Issue #28: the share of successful attacks judged label-changing per check, and accuracy under attack
    beside accuracy under valid attacks (robustprune.attacks.validity), with examples for the reference."""
    if not x.validity:
        return []

    def share(a: Mapping, key: str) -> str:
        r = a["shares"][key]
        return "–" if not r["n"] else Rate(**r).pct(1)

    rule = " or ".join(_VALIDITY_CHECKS.get(c, c) for c in x.validity[0]["rule"])
    lines = [
        "",
        "## Validity of the successful attacks (%, 95% CI)",
        "",
        "An adversarial example counts only if a reader would still give it the original label. Each successful "
        "attack's swapped word pairs are checked for opposite polarity in VADER's and AFINN's lexicons and for "
        "WordNet antonymy, and the whole text by VADER's compound score (clearly polar on both texts, opposite "
        f"signs). A success is judged label-changing when {rule} flags it. **Accuracy under attack** is the "
        "papers' figure (textattack's, comparable with the papers); **under valid attacks** counts the "
        "label-changing successes as failed attacks, the figure a robustness verdict should also rest on. The "
        "paired comparisons above cover both (metric “valid attacks only”). Lexical checks see only "
        "lexical polarity: negation, sarcasm and context escape them, so both accuracies are bounds of a kind.",
        "",
    ]
    header = ["model", "recipe", "successes", *(f"{t} %" for t in _VALIDITY_CHECKS.values())]
    header += ["label-changing %", "acc. under attack %", "acc. under valid attacks %"]
    lines += md_table(
        header,
        (
            [a["model"], RECIPE_TITLES.get(a["recipe"], a["recipe"]), a["successes"]]
            + [share(a, c) for c in [*_VALIDITY_CHECKS, "rule"]]
            + [
                Rate(**a["accuracy_under_attack"]).pct(1),
                f"**{Rate(**a['accuracy_under_valid_attack']).pct(1)}**",
            ]
            for a in x.validity
        ),
    )
    reference = [a for a in x.validity if a["model"] == x.reference] or list(x.validity)
    lines += [
        "",
        f"Examples flagged by each check ({reference[0]['model']}; every model's are in metrics.json, "
        "`validity`):",
        "",
    ]
    rows = (
        [RECIPE_TITLES.get(a["recipe"], a["recipe"])]
        + ["; ".join(a["examples"].get(c, [])) or "–" for c in _VALIDITY_CHECKS]
        for a in reference
        if a["model"] == reference[0]["model"]
    )
    return lines + md_table(["recipe", *_VALIDITY_CHECKS.values()], rows)


def transfer_section(x: ReportInputs) -> list[str]:
    models = [m for m in x.models if "transfer" in m]
    if not models:
        return [
            "",
            "## Transferred adversarial examples",
            "",
            f"The dense reference `{x.reference}` was not attacked in this run, so there is nothing to transfer.",
        ]
    keys = [k for k in models[0]["transfer"] if k != "all"] + ["all"]
    counts = {k: models[0]["transfer"][k]["n"] for k in keys}
    lines = [
        "",
        "## Accuracy on transferred adversarial examples (%, 95% CI)",
        "",
        f"The adversarial texts that fooled the dense reference `{x.reference}` ("
        + ", ".join(f"{RECIPE_TITLES.get(k, k)}: {counts[k]}" for k in keys if k != "all")
        + "), re-scored by every model: forward passes only, so every method and sparsity gets a robustness "
        "figure. The reference scores 0 by construction. Caution: a model that no longer behaves like the "
        "reference scores high here for that reason alone (a constant predictor scores its class's share); "
        "the last column conditions on the clean original being classified correctly by the model itself "
        "(kept / clean-correct), which is not paired across models and gets no verdict. The texts come "
        f"from {len({t['test_row'] for t in x.evaluation.get('transfer', [])})} source rows (up to one per "
        "recipe): the intervals resample source rows (Rao-Scott design effect), not texts.",
        "",
    ]
    clusters = transfer_clusters(x.evaluation.get("transfer", []))
    rows = []
    for m in models:
        cells = [transfer_rate(m, k, clusters).pct(1) for k in keys]
        t = m["transfer"]["all"]
        cells.append(rate(t["kept"], t["clean_correct"]).pct(1) if "kept" in t else "–")
        rows.append([x.mark(m["name"]), m["method"], m["sparsity"], *cells])
    titles = [RECIPE_TITLES.get(k, "all recipes" if k == "all" else k) for k in keys]
    lines += md_table(["model", "method", "sparsity", *titles, "all, given clean correct"], rows)
    lines += ["", "![transferred accuracy vs sparsity](plots/transfer_vs_sparsity.png)"]
    return lines


_VERDICT_HEADER = (
    "A", "B", "metric", "n", "A % [CI]", "B % [CI]", "A − B pts [CI]", "A-only / B-only", "p", "mde pts",
    "ASR both-right pts [CI] (n)", "verdict",
)  # fmt: skip


def verdict_section(comparisons: Sequence[Comparison], mark: Callable[[str], str] = str) -> list[str]:
    if not comparisons:
        return []
    lines = [
        "",
        "## Paired comparisons",
        "",
        "A − B on the rows both models were measured on (n; each model's own row count in brackets when they "
        "differ); interval: Tango's 95% score interval (Rao-Scott adjusted for transferred texts, `deff` = "
        "the design effect); verdict from that interval only, or *no verdict* under attack / on transferred "
        "texts when a model is near-constant (†). Under attack, `ASR both-right` is the attack success rate "
        "difference (A − B, points) on the rows both models classified correctly before the attack: lower "
        "means A resisted more of the attacks both faced.",
    ]
    for relation in RELATIONS:
        rows = [c for c in comparisons if c.relation == relation]
        if not rows:
            continue
        table = []
        for c in rows:
            d = c.diff
            mde = "–" if d.mde is None else f"{100 * d.mde:.1f}"
            n = f"{d.n}" if c.n_a == c.n_b == d.n else f"{d.n} ({c.n_a}/{c.n_b})"
            if d.deff > 1:
                n += f", deff {d.deff:.2f}"
            both = "–"
            if c.both_correct is not None:
                both = f"{c.both_correct.pts(1).removesuffix(' pts')} ({c.both_correct.n})"
            table.append(
                [mark(c.a), mark(c.b), metric_title(c.metric), n, c.a_rate.pct(1), c.b_rate.pct(1)]
                + [d.pts(1).removesuffix(" pts"), f"{d.a_only} / {d.b_only}", f"{d.p_value:.3g}", mde, both]
                + [_verdict_md(c)]
            )
        lines += ["", f"### {relation[0].upper() + relation[1:]}", ""] + md_table(_VERDICT_HEADER, table)
    tally: dict[str, int] = {}
    for c in comparisons:
        tally[c.verdict] = tally.get(c.verdict, 0) + 1
    mdes = [c.diff.mde for c in comparisons if c.diff.mde is not None]
    lines += [
        "",
        f"{len(comparisons)} comparisons: "
        + ", ".join(f"{v}: {k}" for k, v in sorted(tally.items()))
        + ". "
        + (
            f"The smallest detectable difference ranged from {100 * min(mdes):.1f} to {100 * max(mdes):.1f} "
            "points across them"
            if mdes
            else "None had enough disagreeing examples to detect any difference"
        )
        + "; with n examples no difference below 4/n can ever be declared (four disagreements all one way).",
    ]
    return lines


def fidelity_points(x: ReportInputs) -> list[dict]:
    """One point per model that reads its input (the reference and near-constant models excluded):
    fidelity, transferred accuracy, and per recipe the per-row outcomes under attack."""
    pts = []
    for m in x.models:
        if m["name"] == x.reference or "fidelity" not in m or x.near_constant(m["name"]):
            continue
        p = {
            "name": m["name"],
            "kind": m["kind"],
            "method": m["method"],
            "sparsity": m["sparsity"],
            "fidelity": m["fidelity"]["mean"],
            "fidelity_last": m["fidelity"]["last"],
        }
        if "transfer" in m:
            t = m["transfer"]["all"]
            p["transfer"] = t["correct"] / t["n"] if t["n"] else float("nan")
        for rec, sim in m.get("adversarial_similarity", {}).items():
            p[f"adv_similarity:{rec}"] = sim["mean"]
        for (name, rec), o in x.outcomes.items():
            if name == m["name"]:
                p[f"rows:{rec}"] = attack_flags(o)
                p[f"attack:{rec}"] = attack_rate(o).value
        pts.append(p)
    return pts


def fidelity_correlations(
    points: Sequence[dict], recipes: Sequence[str], min_models: int = 6, seed: int = 0
) -> list[dict]:
    """Spearman's ρ between fidelity and each robustness measure across models, with a permutation p.

    Accuracy under attack is recomputed on the rows *every* model in the set was attacked on (one common
    row set); a correlation over fewer than ``min_models`` models is not computed (reason given)."""
    out = []
    for key in ["transfer", *[f"attack:{r}" for r in recipes]]:
        if key == "transfer":
            sel = [p for p in points if "transfer" in p and not math.isnan(p["transfer"])]
            ys, rows = [p["transfer"] for p in sel], None
        else:
            rec = key.removeprefix("attack:")
            sel = [p for p in points if f"rows:{rec}" in p]
            common = set.intersection(*(set(p[f"rows:{rec}"]) for p in sel)) if sel else set()
            ys = [sum(p[f"rows:{rec}"][r] for r in common) / len(common) if common else math.nan for p in sel]
            rows = len(common)
        entry = {"x": "fidelity", "y": key, "n": len(sel), "rows": rows, "models": [p["name"] for p in sel]}
        if len(sel) < min_models or (rows is not None and rows == 0):
            entry["skipped"] = (
                f"{len(sel)} non-degenerate model(s) measured (needs at least {min_models}, report.min_correlation_models)"
                if len(sel) < min_models
                else "no row common to every model"
            )
            out.append(entry)
            continue
        c = spearman([p["fidelity"] for p in sel], ys, seed=seed)
        out.append({**entry, **c.to_dict(), "words": c.words(), "values": ys})
    return out


def fidelity_section(x: ReportInputs) -> list[str]:
    pts = fidelity_points(x)
    if not pts:
        return []
    recipes = list(x.recipes)
    lines = [
        "",
        "## Representation fidelity and robustness: a correlation across models",
        "",
        f"Fidelity = mean cosine similarity of each model's mean-pooled representations to `{x.reference}`'s on "
        "the clean test texts, averaged over the embedding output and every block (last block alone in "
        "brackets). Adversarial similarity = its own cosine between each attacked text and the attack's final "
        "text (mean over layers). Near-constant models and the reference are left out. A rank correlation "
        "across a handful of models describes these models; it does not show a mechanism.",
        "",
    ]
    rows = []
    for p in pts:
        cells = []
        for r in recipes:
            a, s = p.get(f"attack:{r}"), p.get(f"adv_similarity:{r}")
            n = len(p.get(f"rows:{r}", {}))
            cells.append("–" if a is None else f"{_pct(a)} ({n})" + (f" / {s:.3f}" if s is not None else ""))
        rows.append(
            [p["name"], f"{p['fidelity']:.4f} ({p['fidelity_last']:.4f})", _pct(p.get("transfer")), *cells]
        )
    header = ["model", "fidelity (last)", "transferred acc %"]
    header += [f"{RECIPE_TITLES.get(r, r)}: under attack % (n) / adv. similarity" for r in recipes]
    lines += md_table(header, rows)
    lines += [
        "",
        "Spearman's ρ between fidelity and robustness across models (two-sided permutation p; under attack "
        "on the rows every model in the set was attacked on):",
        "",
    ]
    for c in fidelity_correlations(pts, recipes, x.min_correlation_models):
        what = (
            "transferred accuracy"
            if c["y"] == "transfer"
            else f"accuracy under {metric_title(c['y'].removeprefix('attack:')).removeprefix('under ')}"
        )
        where = "" if c["rows"] is None else f" on {c['rows']} common rows"
        if "skipped" in c:
            lines.append(f"- fidelity vs {what}: not computed — {c['skipped']}.")
        else:
            lines.append(f"- fidelity vs {what}{where}: {c['words']}.")
    lines += ["", "![fidelity vs robustness](plots/fidelity_vs_robustness.png)"]
    return lines


def attack_cost_table(rows: Sequence[dict]) -> list[str]:
    if not rows:
        return []
    lines = [
        "",
        "## Attack cost",
        "",
        "Wall time vs the forward floor (victim + constraint-model forward time):",
        "",
    ]
    cells = []
    for r in rows:
        ratio = r.get("wall_over_floor")
        cells.append(
            [r["model"], r["recipe"], f"{r['seconds_per_example']:.2f}", f"{r['wall_seconds']:.1f}"]
            + [f"{r['floor_seconds']:.1f}", "–" if ratio is None else f"{ratio:.2f}"]
        )
    return lines + md_table(["model", "recipe", "s / example", "wall s", "floor s", "wall / floor"], cells)


def sds_table(sds: dict, rows: Sequence[dict]) -> list[str]:
    """SDS: one-shot accuracy -> reactivated (dense) accuracy -> re-pruned accuracy, per combination."""
    if not sds:
        return []
    acc = {r["name"]: r["accuracy"] for r in rows}
    ci = {r["name"]: model_rate(r).pct(2) for r in rows if "correct" in r}
    lines = [
        "",
        "## SDS: prune → reactivate → re-prune (test accuracy %)",
        "",
    ]
    cells = []
    for name, m in sds.items():
        base = acc.get(m.get("source", ""))
        final = acc.get(name, m.get("accuracy"))
        delta = "–" if base is None or final is None else f"{100 * (final - base):+.2f}"
        cells.append(
            [
                m.get("source"),
                _pct(base),
                _pct(m.get("reactivated_accuracy")),
                ci.get(name, _pct(final)),
                delta,
            ]
            + [f"{m.get('seconds', 0):.1f}"]
        )
    header = ["first pass", "one-shot", "reactivated (dense)", "re-pruned (SDS) [95% CI]"]
    header += ["Δ SDS vs one-shot (points; paired verdict below)", "SDS time s"]
    return lines + md_table(header, cells)


def block_table(prune: dict) -> list[str]:
    """Per-block drift (relative error of each block's output against the dense model) and RAKP's α."""
    combos = [(name, m) for name, m in prune.items() if m.get("blocks")]
    if not combos:
        return []
    n = max(len(m["blocks"]) for _, m in combos)
    lines = [
        "",
        "## Per-block output error vs the dense model (RAKP: chosen α in brackets)",
        "",
    ]

    def cell(b: Mapping) -> str:
        a = b.get("alpha")
        return f"{b['output_error']:.4f}" + ("" if a is None else f" [{a:g}]")

    rows = ([name, *(cell(b) for b in m["blocks"])] for name, m in combos)
    return lines + md_table(["model", *(f"block {i}" for i in range(n))], rows)


def plot_rows(rows: Sequence[dict]) -> list[dict]:
    """Rows of the DVC plot: one point per (method, sparsity), dense soup at sparsity 0 for every method."""
    soup = next((r for r in rows if r["name"] == "soup-greedy" or r["kind"] == "finetuned"), None)
    methods = sorted({r["method"] for r in rows if r["kind"] == "pruned"})
    pts = [
        {"method": m, "sparsity": 0.0, "pattern": "dense", "accuracy": soup["accuracy"]}
        for m in methods
        if soup
    ]
    for r in rows:
        if r["kind"] == "pruned":
            pts.append(
                {
                    "method": r["method"],
                    "sparsity": sparsity_value(r["sparsity"]),
                    "pattern": "N:M" if ":" in r["sparsity"] else "unstructured",
                    "accuracy": r["accuracy"],
                }
            )
    return pts


def plot_accuracy(points: Sequence[dict], dest: Path) -> Path:
    """Accuracy vs sparsity per method (unstructured as lines, N:M as separate markers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for i, method in enumerate(sorted({p["method"] for p in points})):
        color = f"C{i}"
        line = sorted(
            (p for p in points if p["method"] == method and p["pattern"] != "N:M"),
            key=lambda p: p["sparsity"],
        )
        ax.plot(
            [p["sparsity"] for p in line],
            [100 * p["accuracy"] for p in line],
            "-o",
            color=color,
            label=method,
        )
        nm = [p for p in points if p["method"] == method and p["pattern"] == "N:M"]
        if nm:
            ax.scatter(
                [p["sparsity"] for p in nm],
                [100 * p["accuracy"] for p in nm],
                marker="s",
                s=60,
                facecolors="none",
                edgecolors=color,
                label=f"{method} N:M",
            )
    ax.set_xlabel("sparsity of pruned Linear weights")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title("Accuracy vs sparsity")
    return _save(fig, dest)


def _save(fig, dest: Path) -> Path:  # noqa: ANN001 - matplotlib figure
    import matplotlib.pyplot as plt

    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.tmp{dest.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(dest)
    return dest


def transfer_plot(models: Sequence[dict], reference: str, dest: Path) -> Path:
    """Accuracy on transferred adversarial examples (all recipes) vs sparsity, one line per method, 95% CIs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    pts = [m for m in models if "transfer" in m and m["kind"] in ("pruned", "sds", "cap")]
    for i, method in enumerate(sorted({m["method"] for m in pts})):
        sub = sorted((m for m in pts if m["method"] == method), key=lambda m: sparsity_value(m["sparsity"]))
        for nm in (False, True):
            part = [m for m in sub if (":" in m["sparsity"]) == nm]
            if not part:
                continue
            rates = [rate(m["transfer"]["all"]["correct"], m["transfer"]["all"]["n"]) for m in part]
            xs = [sparsity_value(m["sparsity"]) for m in part]
            ys = [100 * r.value for r in rates]
            err = [[100 * (r.value - r.low) for r in rates], [100 * (r.high - r.value) for r in rates]]
            ax.errorbar(
                xs,
                ys,
                yerr=err,
                fmt="s" if nm else "-o",
                color=f"C{i}",
                mfc="none" if nm else None,
                capsize=3,
                label=None if nm else method,
            )
    ax.set_xlabel("sparsity (squares: N:M)")
    ax.set_ylabel("accuracy on transferred adversarial texts (%)")
    ax.set_title(f"Adversarial texts found against {reference}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    return _save(fig, dest)


def fidelity_plot(points: Sequence[dict], recipes: Sequence[str], dest: Path, min_models: int = 6) -> Path:
    """Scatter of fidelity against transferred accuracy and against accuracy under each attack (on the rows
    every plotted model was attacked on), with the rank correlation and its permutation p in each title."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    corr = {c["y"]: c for c in fidelity_correlations(points, recipes, min_models)}
    ys = [("transfer", "transferred accuracy (%)")] + [
        (f"attack:{r}", f"accuracy under {RECIPE_TITLES.get(r, r)} (%)") for r in recipes
    ]
    ys = [(k, t) for k, t in ys if k in corr and corr[k]["n"]]
    fig, axes = plt.subplots(1, max(len(ys), 1), figsize=(4.2 * max(len(ys), 1), 3.6), dpi=120, squeeze=False)
    kinds = sorted({p["kind"] for p in points})
    by_name = {p["name"]: p for p in points}
    for ax, (key, title) in zip(axes[0], ys, strict=False):
        c = corr[key]
        values = c.get("values") or [by_name[n].get(key, math.nan) for n in c["models"]]
        for i, kind in enumerate(kinds):
            sel = [
                (by_name[n]["fidelity"], v)
                for n, v in zip(c["models"], values, strict=True)
                if by_name[n]["kind"] == kind
            ]
            ax.scatter([a for a, _ in sel], [100 * v for _, v in sel], color=f"C{i}", label=kind, s=18)
        if "skipped" in c:
            ax.set_title(f"{c['n']} models: too few for a correlation", fontsize=8)
        else:
            rows = "" if c["rows"] is None else f", {c['rows']} rows"
            ax.set_title(
                f"ρ = {c['rho']:+.2f}, perm. p = {c['p_value']:.2g} ({c['n']} models{rows})", fontsize=8
            )
        ax.set_xlabel("fidelity to the dense model (mean cosine)")
        ax.set_ylabel(title)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    return _save(fig, dest)


def frontier_points(x: ReportInputs) -> list[dict]:
    """Per attacked model: clean accuracy (whole test set) and accuracy under each attack, with intervals."""
    by = {m["name"]: m for m in x.models}
    pts = []
    for (name, rec), o in x.outcomes.items():
        m = by.get(name)
        if m is None:
            continue
        pts.append(
            {
                "name": name,
                "kind": m["kind"],
                "method": m["method"],
                "sparsity": m["sparsity"],
                "recipe": rec,
                "clean": model_rate(m),
                "under_attack": attack_rate(o),
                "near_constant": x.near_constant(name),
            }
        )
    return pts


def frontier_plot(points: Sequence[dict], dest: Path) -> Path:
    """Accuracy under attack against clean accuracy, one panel per recipe: each model a point with both
    95% intervals, one line per method through its sparsities; near-constant models hollow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = list(dict.fromkeys(p["recipe"] for p in points)) or ["none"]
    fig, axes = plt.subplots(1, len(recipes), figsize=(4.4 * len(recipes), 3.8), dpi=120, squeeze=False)
    methods = sorted({p["method"] for p in points})
    for ax, rec in zip(axes[0], recipes, strict=True):
        for i, method in enumerate(methods):
            sel = sorted(
                (p for p in points if p["recipe"] == rec and p["method"] == method),
                key=lambda p: p["clean"].value,
            )
            if not sel:
                continue
            xs = [100 * p["clean"].value for p in sel]
            ys = [100 * p["under_attack"].value for p in sel]
            line = [(xv, yv) for p, xv, yv in zip(sel, xs, ys, strict=True) if not p["near_constant"]]
            if len(line) > 1:  # a near-constant model is shown, not joined to its method's frontier
                ax.plot([a for a, _ in line], [b for _, b in line], "-", color=f"C{i}", lw=1, alpha=0.6)
            for p, xv, yv in zip(sel, xs, ys, strict=True):
                c, u = p["clean"], p["under_attack"]
                ax.errorbar(
                    [xv],
                    [yv],
                    xerr=[[100 * (c.value - c.low)], [100 * (c.high - c.value)]],
                    yerr=[[100 * (u.value - u.low)], [100 * (u.high - u.value)]],
                    fmt="o",
                    color=f"C{i}",
                    mfc="none" if p["near_constant"] else f"C{i}",
                    capsize=2,
                    lw=0.8,
                )
                ax.annotate(p["name"] + (" †" if p["near_constant"] else ""), (xv, yv), fontsize=5, alpha=0.8)
            ax.plot([], [], "o-", color=f"C{i}", label=method)
        ax.set_title(f"{RECIPE_TITLES.get(rec, rec)}", fontsize=9)
        ax.set_xlabel("clean test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy under attack (%)")
    axes[0][-1].legend(fontsize=6)
    return _save(fig, dest)


def _attack_row_rate(row: Mapping) -> Rate:
    """Accuracy under attack of an attack.json row, with its interval (failed / attacked examples)."""
    return rate(row["num_failed"], row["num_examples"])


def attack_plot(rows: Sequence[dict], dest: Path) -> Path:
    """Accuracy under attack vs sparsity, one panel per recipe, one line per method (dense soup at 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = sorted({r["recipe"] for r in rows}) or ["none"]
    fig, axes = plt.subplots(1, len(recipes), figsize=(4.2 * len(recipes), 3.6), dpi=120, squeeze=False)
    for ax, rec in zip(axes[0], recipes, strict=True):
        sub = [r for r in rows if r["recipe"] == rec]
        dense = next((r for r in sub if r["model"] == "soup-greedy" or r["kind"] == "finetuned"), None)
        methods = sorted({r["method"] for r in sub if r["kind"] in ("pruned", "sds")})
        for i, method in enumerate(methods):
            pts = [r for r in sub if r["method"] == method]
            un = sorted(
                (r for r in pts if ":" not in r["sparsity"]), key=lambda r: sparsity_value(r["sparsity"])
            )
            xs = ([0.0] if dense else []) + [sparsity_value(r["sparsity"]) for r in un]
            ys = ([100 * dense["accuracy_under_attack"]] if dense else []) + [
                100 * r["accuracy_under_attack"] for r in un
            ]
            rates = ([_attack_row_rate(dense)] if dense else []) + [_attack_row_rate(r) for r in un]
            err = [[100 * (r.value - r.low) for r in rates], [100 * (r.high - r.value) for r in rates]]
            ax.errorbar(xs, ys, yerr=err, fmt="-o", color=f"C{i}", label=method, capsize=3)
            nm = [r for r in pts if ":" in r["sparsity"]]
            if nm:
                ax.scatter(
                    [sparsity_value(r["sparsity"]) for r in nm],
                    [100 * r["accuracy_under_attack"] for r in nm],
                    marker="s",
                    s=60,
                    facecolors="none",
                    edgecolors=f"C{i}",
                )
        if dense:
            ax.axhline(100 * dense["accuracy_under_attack"], color="k", ls=":", lw=1)
        ax.set_title(f"{rec} (n = {sub[0].get('num_examples', '?') if sub else '?'})")
        ax.set_ylim(-2, 102)  # the full range: on a few dozen examples, small gaps are noise
        ax.set_xlabel("sparsity (squares: N:M)")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy under attack (%)")
    axes[0][-1].legend(fontsize=7)
    return _save(fig, dest)


# ------------------------------------------------------------------------------------ causal-LM track
def _spread(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} [{min(values):.2f}–{max(values):.2f}]"


def lm_table(
    rows: Sequence[dict],
    *,
    model: str,
    text: str,
    reference: Mapping[tuple[str, str], float] | None = None,
    reference_source: str = "",
) -> str:
    """reports/lm.md: perplexity per method x sparsity (mean [min–max] over calibration seeds) and SDS.

    ``reference``: (method, sparsity) -> another implementation's perplexity on the same protocol (the caller
    reads it from a committed benchmark result, named by ``reference_source``), shown as context beside ours.
    """
    reference = reference or {}
    dense = next((r for r in rows if r["method"] == "dense"), None)
    groups: dict[tuple[str, str], dict[str, list[dict]]] = {}
    for r in rows:
        if r["method"] == "dense":
            continue
        groups.setdefault((r["method"], r["sparsity"]), {}).setdefault(r.get("stage", "prune"), []).append(r)
    seeds = sorted({r.get("seed") for r in rows if r.get("seed") is not None})
    lines = [
        "# Causal-LM track: perplexity",
        "",
        f"Model `{model}`, evaluation text `{text}`, {dense['tokens'] if dense else '?'} predicted tokens; "
        f"calibration seeds {seeds} (cells: mean [min–max] over seeds). Lower is better.",
        "",
        f"Dense perplexity: {dense['ppl']:.3f}" if dense else "Dense perplexity: –",
        "",
        *(
            [
                f"Reference column: llm-compressor's perplexity for the same model and protocol, from `{reference_source}`.",
                "",
            ]
            if reference
            else []
        ),
        "| method | sparsity | one-shot ppl | reference ppl | SDS reactivated (dense) ppl | SDS re-pruned ppl | SDS Δ % | prune s | SDS s | peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (method, sp), by in groups.items():
        first = [r["ppl"] for r in by.get("prune", [])]
        react = [r["ppl"] for r in by.get("reactivate", [])]
        final = [r["ppl"] for r in by.get("sds", [])]
        delta = "–"
        if first and final:
            m0, m1 = sum(first) / len(first), sum(final) / len(final)
            delta = f"{100 * (m1 - m0) / m0:+.1f}"
        anchor = reference.get((method, sp))
        prune_s = [r.get("prune_seconds", 0.0) for r in by.get("prune", [])]
        sds_s = [r.get("seconds", 0.0) for r in by.get("reactivate", []) + by.get("sds", [])]
        rss = [
            r.get(k, 0.0)
            for r in sum(by.values(), [])
            for k in ("prune_peak_rss_mb", "peak_rss_mb", "eval_peak_rss_mb")
        ]
        lines.append(
            f"| {method} | {sp} | {_spread(first)} | {'–' if anchor is None else anchor} | {_spread(react)} | "
            f"{_spread(final)} | {delta} | {_spread(prune_s) if prune_s else '–'} | "
            f"{sum(sds_s) / max(len(seeds), 1):.0f} | {max(rss) if rss else 0:.0f} |"
        )
    lines += ["", "![perplexity](plots/lm_perplexity.png)", ""]
    return "\n".join(lines)


def lm_plot(rows: Sequence[dict], dest: Path) -> Path:
    """Bar chart of log-perplexity per method x sparsity: one-shot vs SDS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys: list[tuple[str, str]] = []
    for r in rows:
        if r["method"] != "dense" and (r["method"], r["sparsity"]) not in keys:
            keys.append((r["method"], r["sparsity"]))

    def mean(method: str, sp: str, stage: str) -> float:
        v = [
            r["ppl"]
            for r in rows
            if (r["method"], r["sparsity"], r.get("stage", "prune")) == (method, sp, stage)
        ]
        return sum(v) / len(v) if v else float("nan")

    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(keys)), 4), dpi=120)
    xs = range(len(keys))
    ax.bar([x - 0.2 for x in xs], [mean(m, s, "prune") for m, s in keys], 0.4, label="one-shot")
    ax.bar([x + 0.2 for x in xs], [mean(m, s, "sds") for m, s in keys], 0.4, label="+ SDS")
    dense = next((r["ppl"] for r in rows if r["method"] == "dense"), None)
    if dense:
        ax.axhline(dense, color="k", ls="--", lw=1, label=f"dense {dense:.1f}")
    ax.set_xticks(list(xs), [f"{m}\n{s}" for m, s in keys], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("perplexity (log scale)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    return _save(fig, dest)

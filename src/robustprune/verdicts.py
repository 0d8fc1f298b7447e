"""The report's comparisons: which pairs of models are compared, on which per-example outcomes, with what verdict.

Every comparison is *paired*: both models are scored on the same examples (the clean test split, the same
seeded attacked rows, or the same adversarial texts transferred from the dense model), and the verdict comes
from the interval of :func:`robustprune.stats.paired_difference` alone (Tango's score interval: "better" /
"worse" only when it excludes 0, else "no measurable difference"). Transferred texts come several to a test
row, so their intervals are Rao-Scott adjusted for clustering by source row
(:func:`robustprune.stats.clustered_paired_difference`).

A model that ignores its input (:mod:`robustprune.degeneracy`: recall below ``report.near_constant_recall``
on some class) cannot be attacked, so a comparison under attack or on transferred texts that involves one
gets **no verdict** (its numbers are still shown); clean-accuracy verdicts stay.

Pairs (when both models exist): the greedy soup against its best single ingredient; every pruned, SDS and
CAP model against the dense reference; every method against SparseGPT at the same sparsity; SDS against its
one-shot model; CAP against its no-contrastive ablation and against RAKP at the same sparsity; and every
non-baseline model (RAKP, SDS, CAP) against the one-shot baseline (magnitude, Wanda, SparseGPT; not
near-constant) of the *nearest clean accuracy* measured on the same metric — robustness compared at matched
accuracy, not only at matched sparsity. Transferred texts were found against the dense reference, so no
transferred comparison involves the reference itself. A pairing uses the rows both models were measured on;
each comparison records how many rows each model had and how many they share.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robustprune.degeneracy import ClassBalance
from robustprune.registry import METHODS, RAKP, REFERENCE_METHOD
from robustprune.stats import (
    PairedDifference,
    Rate,
    clustered_paired_difference,
    clustered_rate,
    paired_difference,
    rate_of,
)

# relation labels, in report order
SOUP_VS_BEST = "soup vs its best ingredient"
VS_DENSE = "vs the dense model"
VS_SPARSEGPT = "vs SparseGPT, same sparsity"
MATCHED = "vs the baseline of nearest clean accuracy"
SDS_VS_ONESHOT = "SDS vs its one-shot model"
CAP_VS_ABLATION = "CAP vs no contrastive loss"
CAP_VS_RAKP = "CAP vs RAKP, same sparsity"
RELATIONS = (SOUP_VS_BEST, VS_DENSE, VS_SPARSEGPT, MATCHED, SDS_VS_ONESHOT, CAP_VS_ABLATION, CAP_VS_RAKP)

#: one-shot baselines a method is matched against by clean accuracy
BASELINES = tuple(m.name for m in METHODS.values() if m.baseline)
#: the verdict of a robustness comparison that involves a model ignoring its input
NOT_JUDGED = "no verdict (near-constant model)"


@dataclass(frozen=True)
class Comparison:
    """A − B on one metric (``clean``, an attack recipe, ``valid:<recipe>`` or ``transfer:<recipe>``).

    ``n_a`` / ``n_b``: rows each model was measured on; ``diff.n``: the rows both share (the pairing).
    ``verdict``: the interval's verdict, or :data:`NOT_JUDGED` for a robustness metric with a
    near-constant model. ``both_correct``: under attack, the difference in attack success rate (A − B) on
    the rows both models classify correctly before the attack (``None`` elsewhere).
    """

    a: str
    b: str
    relation: str
    metric: str
    a_rate: Rate
    b_rate: Rate
    diff: PairedDifference
    n_a: int
    n_b: int
    verdict: str
    both_correct: PairedDifference | None = None

    def to_dict(self) -> dict:
        """Plain dict (JSON / MLflow)."""
        return {
            "a": self.a,
            "b": self.b,
            "relation": self.relation,
            "metric": self.metric,
            "a_rate": self.a_rate.to_dict(),
            "b_rate": self.b_rate.to_dict(),
            **self.diff.to_dict(),
            "interval_verdict": self.diff.verdict,
            "verdict": self.verdict,
            "n_a": self.n_a,
            "n_b": self.n_b,
            "both_correct_asr": None if self.both_correct is None else self.both_correct.to_dict(),
        }


def is_robustness_metric(metric: str) -> bool:
    """Every metric but clean accuracy measures robustness."""
    return metric != "clean"


def comparison_pairs(
    models: Sequence[Mapping], reference: str, best_ingredient: str | None = None
) -> list[tuple[str, str, str]]:
    """(A, B, relation) for every fixed comparison the report makes, in report order (the matched-accuracy
    pairs depend on the metric: :func:`matched_baseline`)."""
    names = {m["name"] for m in models}
    by_combo = {(m["method"], m["sparsity"]): m["name"] for m in models if m["kind"] == "pruned"}
    pairs: list[tuple[str, str, str]] = []
    if best_ingredient and best_ingredient in names and "soup-greedy" in names:
        pairs.append(("soup-greedy", best_ingredient, SOUP_VS_BEST))
    for m in models:
        if m["kind"] in ("pruned", "sds", "cap") and reference in names:
            pairs.append((m["name"], reference, VS_DENSE))
    for m in models:
        if m["kind"] == "pruned" and m["method"] != REFERENCE_METHOD.name:
            other = by_combo.get((REFERENCE_METHOD.name, m["sparsity"]))
            if other:
                pairs.append((m["name"], other, VS_SPARSEGPT))
    for m in models:
        if m["kind"] == "sds":
            base = m["name"].removeprefix("sds-")
            if base in names:
                pairs.append((m["name"], base, SDS_VS_ONESHOT))
    for m in models:
        if m["kind"] == "cap" and m["name"].startswith("cap_"):
            ablation = "cap-nocl_" + m["name"].removeprefix("cap_")
            if ablation in names:
                pairs.append((m["name"], ablation, CAP_VS_ABLATION))
    for m in models:
        if m["kind"] == "cap" and m["method"] == "cap":  # unstructured CAP against one-shot RAKP
            rakp = by_combo.get((RAKP.name, m["sparsity"]))
            if rakp:
                pairs.append((m["name"], rakp, CAP_VS_RAKP))
    return pairs


def flags(bits: str) -> list[bool]:
    """A '0'/'1' string of per-example correctness as booleans."""
    return [c == "1" for c in bits]


def attack_flags(outcomes: Mapping[int, str]) -> dict[int, bool]:
    """Per attacked row: correct under attack (the attack failed), rows with no words to attack left out.

    ``outcomes`` maps test row -> outcome ("succeeded" | "failed" | "skipped" | "no words").
    """
    return {row: o == "failed" for row, o in outcomes.items() if o != "no words"}


def attacked_rows(outcomes: Mapping[int, str]) -> dict[int, bool]:
    """Per row the model classified correctly before the attack: did the attack succeed?"""
    return {row: o == "succeeded" for row, o in outcomes.items() if o in ("succeeded", "failed")}


def metric_flags(
    model: Mapping, metric: str, attacks: Mapping[tuple[str, str], Mapping[int, str]]
) -> dict[int, bool] | None:
    """Per-example correctness of one model on one metric, keyed by example; None when not measured."""
    if metric == "clean":
        return dict(enumerate(flags(model["correct_bits"]))) if "correct_bits" in model else None
    if metric.startswith("transfer:"):
        t = model.get("transfer", {}).get(metric.removeprefix("transfer:"))
        return dict(enumerate(flags(t["bits"]))) if t else None
    outcomes = attacks.get((model["name"], metric))
    return attack_flags(outcomes) if outcomes is not None else None


def transfer_clusters(transfer: Sequence[Mapping]) -> dict[str, list[int]]:
    """Per transfer key (each recipe, and ``all``): the source test row of each transferred text, in the
    order of the model's bits (eval.json's ``transfer`` list is in recipe then row order)."""
    out: dict[str, list[int]] = {"all": [int(t["test_row"]) for t in transfer]}
    for t in transfer:
        out.setdefault(t["recipe"], []).append(int(t["test_row"]))
    return out


def clean_accuracy(model: Mapping) -> float:
    return model["correct"] / model["total"] if model.get("total") else float("nan")


def matched_baseline(
    model: Mapping,
    models: Sequence[Mapping],
    metric: str,
    attacks: Mapping[tuple[str, str], Mapping[int, str]],
    balance: Mapping[str, ClassBalance],
) -> str | None:
    """The one-shot baseline (magnitude / Wanda / SparseGPT, not near-constant, measured on ``metric`` on
    rows it shares with ``model``) whose clean accuracy is nearest ``model``'s; None when there is none.
    Only RAKP, SDS and CAP models get one (a baseline is not matched against baselines)."""
    if model["kind"] not in ("pruned", "sds", "cap") or model["method"] in BASELINES:
        return None
    own = metric_flags(model, metric, attacks)
    if own is None:
        return None
    best, gap = None, float("inf")
    for m in models:
        if m["kind"] != "pruned" or m["method"] not in BASELINES or m["name"] == model["name"]:
            continue
        if balance.get(m["name"]) is not None and balance[m["name"]].near_constant:
            continue
        theirs = metric_flags(m, metric, attacks)
        if theirs is None or not set(own) & set(theirs):
            continue
        g = abs(clean_accuracy(m) - clean_accuracy(model))
        if g < gap:
            best, gap = m["name"], g
    return best


def _compare_one(
    a: Mapping,
    b: Mapping,
    relation: str,
    metric: str,
    attacks: Mapping[tuple[str, str], Mapping[int, str]],
    balance: Mapping[str, ClassBalance],
    clusters: Mapping[str, list[int]],
    confidence: float,
) -> Comparison | None:
    fa, fb = metric_flags(a, metric, attacks), metric_flags(b, metric, attacks)
    if fa is None or fb is None:
        return None
    common = sorted(set(fa) & set(fb))
    if not common:
        return None
    xa, xb = [fa[i] for i in common], [fb[i] for i in common]
    source = clusters.get(metric.removeprefix("transfer:")) if metric.startswith("transfer:") else None
    if source is not None:
        if len(source) != len(fa):
            raise ValueError(f"{metric}: {len(fa)} transferred texts but {len(source)} source rows")
        ids = [source[i] for i in common]
        ra, rb = clustered_rate(xa, ids, confidence), clustered_rate(xb, ids, confidence)
        diff = clustered_paired_difference(xa, xb, ids, confidence)
    else:
        ra, rb, diff = rate_of(xa, confidence), rate_of(xb, confidence), paired_difference(xa, xb, confidence)
    degenerate = any(balance.get(x["name"]) is not None and balance[x["name"]].near_constant for x in (a, b))
    verdict = NOT_JUDGED if degenerate and is_robustness_metric(metric) else diff.verdict
    both = None
    oa, ob = attacks.get((a["name"], metric)), attacks.get((b["name"], metric))
    if oa is not None and ob is not None:
        sa, sb = attacked_rows(oa), attacked_rows(ob)
        rows = sorted(set(sa) & set(sb))
        if rows:
            both = paired_difference([sa[r] for r in rows], [sb[r] for r in rows], confidence)
    return Comparison(a["name"], b["name"], relation, metric, ra, rb, diff, len(fa), len(fb), verdict, both)


def compare(
    models: Sequence[Mapping],
    attacks: Mapping[tuple[str, str], Mapping[int, str]],
    metrics: Sequence[str],
    reference: str,
    best_ingredient: str | None = None,
    confidence: float = 0.95,
    balance: Mapping[str, ClassBalance] | None = None,
    transfer: Sequence[Mapping] = (),
) -> list[Comparison]:
    """Every pair of :func:`comparison_pairs` and every matched-accuracy pair on every metric both models
    were measured on. ``balance``: each model's :class:`ClassBalance` (near-constant models get no
    robustness verdict); ``transfer``: eval.json's transferred texts (their source rows are the clusters)."""
    balance = balance or {}
    clusters = transfer_clusters(transfer) if transfer else {}
    by = {m["name"]: m for m in models}
    out = []

    def add(a: str, b: str, relation: str, metric: str) -> None:
        if metric.startswith("transfer:") and reference in (a, b):
            return  # the texts were found against the reference: it scores 0 by construction
        c = _compare_one(by[a], by[b], relation, metric, attacks, balance, clusters, confidence)
        if c is not None:
            out.append(c)

    for a, b, relation in comparison_pairs(models, reference, best_ingredient):
        for metric in metrics:
            add(a, b, relation, metric)
    attacked = [x for x in metrics if x != "clean" and not x.startswith("transfer:")]
    for m in models:
        # an attacked model keeps the baseline it is matched with under attack for its clean and
        # transferred comparisons too (one pair to read); others take the nearest on each metric
        under = (matched_baseline(m, models, x, attacks, balance) for x in attacked)
        fixed = next((b for b in under if b is not None), None)
        for metric in metrics:
            base = (
                fixed
                if fixed and metric not in attacked
                else matched_baseline(m, models, metric, attacks, balance)
            )
            if base is not None:
                add(m["name"], base, MATCHED, metric)
    order = {r: i for i, r in enumerate(RELATIONS)}
    return sorted(out, key=lambda c: order[c.relation])  # stable: pair order kept within a relation

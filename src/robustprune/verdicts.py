"""The report's comparisons: which pairs of models are compared, on which per-example outcomes, with what verdict.

Every comparison is *paired*: both models are scored on the same examples (the clean test split, the same
seeded attacked rows, or the same adversarial texts transferred from the dense model), and the verdict comes
from :func:`robustprune.stats.paired_difference` alone ("better" / "worse" only when the interval of the
difference excludes 0, else "no measurable difference").

Pairs (when both models exist): every pruned, SDS and CAP model against the dense reference; every method
against SparseGPT at the same sparsity; SDS against its one-shot model; CAP against its no-contrastive
ablation (``cap-nocl_<s>``); the greedy soup against its best single ingredient. Transferred adversarial
texts were found against the dense reference, so no transferred comparison involves the reference itself.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from robustprune.stats import PairedDifference, Rate, paired_difference, rate_of

# relation labels, in report order
VS_DENSE = "vs the dense model"
VS_SPARSEGPT = "vs SparseGPT, same sparsity"
SDS_VS_ONESHOT = "SDS vs its one-shot model"
CAP_VS_ABLATION = "CAP vs no contrastive loss"
CAP_VS_RAKP = "CAP vs RAKP, same sparsity"
SOUP_VS_BEST = "soup vs its best ingredient"
RELATIONS = (SOUP_VS_BEST, VS_DENSE, VS_SPARSEGPT, SDS_VS_ONESHOT, CAP_VS_ABLATION, CAP_VS_RAKP)


@dataclass(frozen=True)
class Comparison:
    """A − B on one metric (``clean``, an attack recipe, or ``transfer:<recipe>``)."""

    a: str
    b: str
    relation: str
    metric: str
    a_rate: Rate
    b_rate: Rate
    diff: PairedDifference

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
        }


def comparison_pairs(
    models: Sequence[Mapping], reference: str, best_ingredient: str | None = None
) -> list[tuple[str, str, str]]:
    """(A, B, relation) for every comparison the report makes, in report order."""
    names = {m["name"] for m in models}
    by_combo = {(m["method"], m["sparsity"]): m["name"] for m in models if m["kind"] == "pruned"}
    pairs: list[tuple[str, str, str]] = []
    if best_ingredient and best_ingredient in names and "soup-greedy" in names:
        pairs.append(("soup-greedy", best_ingredient, SOUP_VS_BEST))
    for m in models:
        if m["kind"] in ("pruned", "sds", "cap") and reference in names:
            pairs.append((m["name"], reference, VS_DENSE))
    for m in models:
        if m["kind"] == "pruned" and m["method"] != "sparsegpt":
            other = by_combo.get(("sparsegpt", m["sparsity"]))
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
            rakp = by_combo.get(("rakp", m["sparsity"]))
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


def compare(
    models: Sequence[Mapping],
    attacks: Mapping[tuple[str, str], Mapping[int, str]],
    metrics: Sequence[str],
    reference: str,
    best_ingredient: str | None = None,
    confidence: float = 0.95,
) -> list[Comparison]:
    """Every pair of :func:`comparison_pairs` on every metric both models were measured on."""
    by = {m["name"]: m for m in models}
    out = []
    for a, b, relation in comparison_pairs(models, reference, best_ingredient):
        for metric in metrics:
            if metric.startswith("transfer:") and reference in (a, b):
                continue  # the texts were found against the reference: it scores 0 by construction
            fa, fb = metric_flags(by[a], metric, attacks), metric_flags(by[b], metric, attacks)
            if fa is None or fb is None:
                continue
            common = sorted(set(fa) & set(fb))
            if not common:
                continue
            xa, xb = [fa[i] for i in common], [fb[i] for i in common]
            out.append(
                Comparison(
                    a,
                    b,
                    relation,
                    metric,
                    rate_of(xa, confidence),
                    rate_of(xb, confidence),
                    paired_difference(xa, xb, confidence),
                )
            )
    return out

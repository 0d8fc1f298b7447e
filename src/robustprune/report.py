"""The report: one markdown summary, DVC metrics, and the accuracy-vs-sparsity plot.

Pure functions over the stages' JSON outputs; the flow decides where files go. Every number shown is read
from a stage's measured output; the comparisons in "Findings" are computed, never written by hand, and
say plainly when a method does not beat its baseline.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from robustprune.config import parse_sparsity


def sparsity_value(label: str) -> float:
    return parse_sparsity(label)[0]


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.2f}"


def findings(rows: Sequence[dict], soup_acc: float | None) -> list[str]:
    """Computed one-line comparisons a reader would look for first."""
    out = []
    pruned = [r for r in rows if r["kind"] == "pruned"]
    by = {(r["method"], r["sparsity"]): r["accuracy"] for r in pruned}
    for (method, sp), acc in sorted(by.items()):
        if method == "magnitude":
            continue
        base = by.get(("magnitude", sp))
        if base is not None:
            verdict = "beats" if acc > base else ("ties" if acc == base else "does NOT beat")
            out.append(f"{method} at {sp} {verdict} magnitude: {_pct(acc)}% vs {_pct(base)}% accuracy.")
        if soup_acc is not None:
            out.append(
                f"{method} at {sp} loses {100 * (soup_acc - acc):.2f} points against the dense soup ({_pct(soup_acc)}%)."
            )
    return out


def markdown_summary(
    prepare: dict,
    finetune: dict,
    soup: dict,
    rows: Sequence[dict],
    prune: dict,
    sds: dict | None = None,
    attack: Sequence[dict] = (),
    recipes: Sequence[str] = (),
    attack_note: str = "",
) -> str:
    """reports/summary.md."""
    d = prepare.get("data", {})
    lines = ["# robustprune summary", ""]
    lines += [
        f"Data: {d.get('train_size')} train / {d.get('validation_size')} validation / {d.get('test_size')} test "
        f"examples, labels {d.get('label_names')}. Model: `{prepare.get('model', {}).get('model')}`.",
        "",
    ]
    lines += [
        "## Fine-tuned variants and soups",
        "",
        "| model | validation acc % | test acc % | notes |",
        "|---|---|---|---|",
    ]
    for name, m in finetune.items():
        lines.append(
            f"| {name} | {_pct(m['validation_accuracy'])} | {_pct(m['test_accuracy'])} | lr {m['learning_rate']:g}, "
            f"{m['epochs']:g} epoch(s), seed {m['seed']}, {m['train_seconds']:.0f} s |"
        )
    for kind in ("greedy", "uniform"):
        s = soup.get(kind)
        if s:
            lines.append(
                f"| soup-{kind} | {_pct(s['validation_accuracy'])} | {_pct(s['test_accuracy'])} | members: {', '.join(s['members'])} |"
            )
    best_val = max((m["validation_accuracy"] for m in finetune.values()), default=None)
    if best_val is not None and "greedy" in soup:
        g = soup["greedy"]["validation_accuracy"]
        lines += [
            "",
            f"Greedy soup vs its best ingredient on validation: {_pct(g)}% vs {_pct(best_val)}% "
            f"({'matches or beats' if g >= best_val else 'BELOW'}).",
        ]
    soup_acc = next((r["accuracy"] for r in rows if r["name"] == "soup-greedy"), None)
    lines += [
        "",
        "## Pruned models (test split)",
        "",
        "| model | method | target sparsity | measured sparsity % | accuracy % | Δ vs greedy soup (points) | prune time s |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if r["kind"] not in ("pruned", "sds"):
            continue
        delta = "–" if soup_acc is None else f"{100 * (r['accuracy'] - soup_acc):+.2f}"
        secs = {**prune, **(sds or {})}.get(r["name"], {}).get("prune_seconds")
        lines.append(
            f"| {r['name']} | {r['method']} | {r['sparsity']} | {_pct(r['measured_sparsity'])} | {_pct(r['accuracy'])} "
            f"| {delta} | {'–' if secs is None else f'{secs:.1f}'} |"
        )
    lines += sds_table(sds or {}, rows)
    lines += attack_table(attack, recipes)
    if attack_note:
        lines += ["", attack_note]
    if attack:
        lines += ["", "![accuracy under attack vs sparsity](plots/attack_vs_sparsity.png)"]
    lines += ["", "## Findings (computed)", ""] + [f"- {f}" for f in findings(rows, soup_acc)]
    lines += [f"- {f}" for f in attack_findings(attack)]
    lines += block_table(prune)
    lines += ["", "![accuracy vs sparsity](plots/accuracy_vs_sparsity.png)", ""]
    return "\n".join(lines)


def sds_table(sds: dict, rows: Sequence[dict]) -> list[str]:
    """SDS: one-shot accuracy -> reactivated (dense) accuracy -> re-pruned accuracy, per combination."""
    if not sds:
        return []
    acc = {r["name"]: r["accuracy"] for r in rows}
    lines = [
        "",
        "## SDS: prune → reactivate → re-prune (test accuracy %)",
        "",
        "| first pass | one-shot | reactivated (dense) | re-pruned (SDS) | Δ SDS vs one-shot (points) | SDS time s |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in sds.items():
        base = acc.get(m.get("source", ""))
        final = acc.get(name, m.get("accuracy"))
        delta = "–" if base is None or final is None else f"{100 * (final - base):+.2f}"
        lines.append(
            f"| {m.get('source')} | {_pct(base)} | {_pct(m.get('reactivated_accuracy'))} | {_pct(final)} | {delta} "
            f"| {m.get('seconds', 0):.1f} |"
        )
    return lines


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
        "| model | " + " | ".join(f"block {i}" for i in range(n)) + " |",
        "|---" * (n + 1) + "|",
    ]
    for name, m in combos:
        cells = []
        for b in m["blocks"]:
            a = b.get("alpha")
            cells.append(f"{b['output_error']:.4f}" + ("" if a is None else f" [{a:g}]"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def plot_rows(rows: Sequence[dict]) -> list[dict]:
    """Rows of the DVC plot: one point per (method, sparsity), dense soup at sparsity 0 for every method."""
    soup = next((r for r in rows if r["name"] == "soup-greedy"), None)
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
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.tmp{dest.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(dest)
    return dest


# ------------------------------------------------------------------------------------ causal-LM track
#: Perplexities measured by the issue that defined the SmolLM2 protocol (llm-compressor's functions).
LM_ANCHORS = {
    ("dense", "0"): 19.82,
    ("magnitude", "0.5"): 309.7,
    ("magnitude", "2:4"): 937.4,
    ("wanda", "0.5"): 38.74,
    ("wanda", "2:4"): 111.4,
    ("sparsegpt", "0.5"): 31.78,
    ("sparsegpt", "2:4"): 49.60,
}


def _spread(values: Sequence[float]) -> str:
    if not values:
        return "–"
    mean = sum(values) / len(values)
    if len(values) == 1:
        return f"{mean:.2f}"
    return f"{mean:.2f} [{min(values):.2f}–{max(values):.2f}]"


def lm_table(rows: Sequence[dict], *, model: str, text: str) -> str:
    """reports/lm.md: perplexity per method x sparsity (mean [min–max] over calibration seeds) and SDS."""
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
        f"Dense perplexity: {dense['ppl']:.3f}"
        + (f" (anchor {LM_ANCHORS[('dense', '0')]})" if model == "smollm2" else "")
        if dense
        else "Dense perplexity: –",
        "",
        "| method | sparsity | one-shot ppl | anchor | SDS reactivated (dense) ppl | SDS re-pruned ppl | SDS Δ % | prune s | SDS s | peak RSS MB |",
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
        anchor = LM_ANCHORS.get((method, sp)) if model == "smollm2" else None
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
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.tmp{dest.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(dest)
    return dest


# --------------------------------------------------------------------------------------------- attacks
ATTACK_KEYS = ("original_accuracy", "accuracy_under_attack", "attack_success_rate", "avg_queries")


def attack_table(rows: Sequence[dict], recipes: Sequence[str], num_examples: int | None = None) -> list[str]:
    """Model x recipe: clean accuracy on the attacked set / accuracy under attack / success rate / queries."""
    if not rows:
        return []
    models: list[str] = []
    for r in rows:
        if r["model"] not in models:
            models.append(r["model"])
    by = {(r["model"], r["recipe"]): r for r in rows}
    n = num_examples if num_examples is not None else rows[0].get("num_examples")
    lines = [
        "",
        "## Robustness: accuracy under attack",
        "",
        f"Each cell: clean accuracy on the attacked examples / accuracy under attack / attack success rate "
        f"(all %) / mean queries, on the same {n} seeded test examples for every model (textattack's "
        "definitions: success rate = succeeded / (succeeded + failed); accuracy under attack = failed / N).",
        "",
        "| model | method | sparsity | " + " | ".join(recipes) + " |",
        "|---|---|---|" + "---|" * len(recipes),
    ]
    for m in models:
        first = next(r for r in rows if r["model"] == m)
        cells = []
        for rec in recipes:
            r = by.get((m, rec))
            if r is None:
                cells.append("–")
                continue
            cells.append(
                f"{_pct(r['original_accuracy'])} / **{_pct(r['accuracy_under_attack'])}** / "
                f"{_pct(r['attack_success_rate'])} / {r['avg_queries']:.0f}"
            )
        lines.append(f"| {m} | {first['method']} | {first['sparsity']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Attack cost (wall time vs the forward floor = victim + constraint-model forward time):",
        "",
    ]
    lines += [
        "| model | recipe | s / example | wall s | floor s | wall / floor |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r.get("wall_over_floor")
        lines.append(
            f"| {r['model']} | {r['recipe']} | {r['seconds_per_example']:.2f} | {r['wall_seconds']:.1f} | "
            f"{r['floor_seconds']:.1f} | {'–' if ratio is None else f'{ratio:.2f}'} |"
        )
    return lines


def attack_findings(rows: Sequence[dict]) -> list[str]:
    """Computed comparisons: each pruned model vs the dense soup, rakp vs sparsegpt, SDS vs its first pass."""
    by = {(r["model"], r["recipe"]): r["accuracy_under_attack"] for r in rows}
    out = []
    recipes = sorted({r["recipe"] for r in rows})
    for rec in recipes:
        dense = by.get(("soup-greedy", rec))
        for r in rows:
            if r["recipe"] != rec or r["kind"] not in ("pruned", "sds"):
                continue
            if dense is not None:
                d = 100 * (r["accuracy_under_attack"] - dense)
                out.append(
                    f"{rec}: {r['model']} {'keeps' if d >= 0 else 'loses'} {abs(d):.1f} points of accuracy under attack vs the dense soup."
                )
            if r["method"] == "rakp":
                sg = by.get((r["model"].replace("rakp_", "sparsegpt_"), rec))
                if sg is not None:
                    verdict = (
                        "beats"
                        if r["accuracy_under_attack"] > sg
                        else ("ties" if r["accuracy_under_attack"] == sg else "does NOT beat")
                    )
                    out.append(
                        f"{rec}: {r['model']} {verdict} sparsegpt under attack ({_pct(r['accuracy_under_attack'])}% vs {_pct(sg)}%)."
                    )
            if r["kind"] == "sds":
                base = by.get((r["model"].removeprefix("sds-"), rec))
                if base is not None:
                    verdict = "improves on" if r["accuracy_under_attack"] > base else "does NOT improve on"
                    out.append(
                        f"{rec}: {r['model']} {verdict} its one-shot model under attack ({_pct(r['accuracy_under_attack'])}% vs {_pct(base)}%)."
                    )
    return out


def attack_plot(rows: Sequence[dict], dest: Path) -> Path:
    """Accuracy under attack vs sparsity, one panel per recipe, one line per method (dense soup at 0)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recipes = sorted({r["recipe"] for r in rows}) or ["none"]
    fig, axes = plt.subplots(1, len(recipes), figsize=(4.2 * len(recipes), 3.6), dpi=120, squeeze=False)
    for ax, rec in zip(axes[0], recipes, strict=True):
        sub = [r for r in rows if r["recipe"] == rec]
        dense = next((r for r in sub if r["model"] == "soup-greedy"), None)
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
            ax.plot(xs, ys, "-o", color=f"C{i}", label=method)
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
    fig.tight_layout()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.stem}.tmp{dest.suffix}")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(dest)
    return dest

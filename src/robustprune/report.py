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


def markdown_summary(prepare: dict, finetune: dict, soup: dict, rows: Sequence[dict], prune: dict) -> str:
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
        if r["kind"] != "pruned":
            continue
        delta = "–" if soup_acc is None else f"{100 * (r['accuracy'] - soup_acc):+.2f}"
        secs = prune.get(r["name"], {}).get("prune_seconds")
        lines.append(
            f"| {r['name']} | {r['method']} | {r['sparsity']} | {_pct(r['measured_sparsity'])} | {_pct(r['accuracy'])} "
            f"| {delta} | {'–' if secs is None else f'{secs:.1f}'} |"
        )
    lines += ["", "## Findings (computed)", ""] + [f"- {f}" for f in findings(rows, soup_acc)]
    lines += block_table(prune)
    lines += ["", "![accuracy vs sparsity](plots/accuracy_vs_sparsity.png)", ""]
    return "\n".join(lines)


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

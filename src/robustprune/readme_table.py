"""The README's results table, generated from the committed report.

``python -m robustprune.readme_table`` prints the table for ``reports/metrics.json`` (written by
``tasks/report.py``); ``--write README.md`` (what ``make readme-table`` runs) replaces the block between
:data:`START` and :data:`END` in place. ``tests/unit/test_docs.py`` checks that the README's block equals this
module's output for the committed ``reports/metrics.json``, so the README never quotes a figure the report does
not contain.

Two tables: clean test accuracy per method × sparsity (dense soups in their own column), and accuracy under
each attack for the models the run attacked. Every cell is a percentage with its 95% Wilson interval, exactly
as ``reports/summary.md`` shows it (:meth:`robustprune.stats.Rate.pct`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from robustprune.config import ATTACK_RECIPES, parse_sparsity
from robustprune.registry import METHODS
from robustprune.report import RECIPE_TITLES, md_table
from robustprune.stats import Rate

START = "<!-- results-table:start -->"
END = "<!-- results-table:end -->"
ANSWER_START = "<!-- answer:start -->"
ANSWER_END = "<!-- answer:end -->"
#: where the README's answer comes from: the evidence run when it is committed, else the default run
ANSWER_SOURCES = ("reports/evidence/metrics.json", "reports/metrics.json")

#: row order of the tables; methods not listed here follow in alphabetical order
KIND_ORDER = ("soup", "variant", "pruned", "sds", "cap")
METHOD_ORDER = ("dense", *METHODS, "cap", "cap-nocl", "cap-f")
RECIPE_ORDER = ATTACK_RECIPES
DENSE = "dense"
#: methods whose sparsity is a share of heads / FFN neurons removed, not of weights
STRUCTURED = {"cap-f": "cap-f (structured)"}


def _rank(value: str, order: Sequence[str]) -> tuple[int, str]:
    return (order.index(value), "") if value in order else (len(order), value)


def _method_key(method: str) -> tuple:
    """``sds+rakp`` sorts after every one-shot method, in its base method's place."""
    base = method.removeprefix("sds+")
    return (method != base, _rank(base, METHOD_ORDER))


def sparsity_key(label: str) -> tuple:
    """Dense first, then fractions by value, then N:M patterns by (M, N)."""
    if label == DENSE:
        return (0, 0.0, 0, 0)
    s, n, m = parse_sparsity(label)
    return (1, s, 0, 0) if n is None else (2, 0.0, m, n)


def sparsity_title(label: str) -> str:
    """``0.875`` -> ``87.5%``, ``2:4`` -> ``2:4``, ``dense`` -> ``dense``."""
    if label == DENSE:
        return DENSE
    s, n, _ = parse_sparsity(label)
    return label if n is not None else f"{100 * s:g}%"


def _rate(d: Mapping | None) -> str:
    return "–" if not d else Rate(**{k: d[k] for k in ("k", "n", "value", "low", "high")}).pct(1)


def _models(metrics: Mapping) -> Mapping[str, Mapping]:
    models = metrics.get("models")
    if not isinstance(models, Mapping):
        raise ValueError(
            "reports/metrics.json has no 'models' section (written before the report gained intervals): "
            "re-run the report (`python -m flows.report` or `make run`), then `make readme-table`"
        )
    return models


def clean_table(metrics: Mapping) -> list[str]:
    """Method × sparsity clean test accuracy; the dense soups are rows of their own in a ``dense`` column."""
    models = _models(metrics)
    cells: dict[str, dict[str, str]] = {}
    row_keys: dict[str, tuple] = {}
    for name, m in models.items():
        kind = m["kind"]
        if kind not in ("soup", "pruned", "sds", "cap"):
            continue
        row = name if kind == "soup" else STRUCTURED.get(m["method"], m["method"])
        col = DENSE if kind == "soup" else m["sparsity"]
        cells.setdefault(row, {})[col] = _rate(m["accuracy"])
        row_keys[row] = (_rank(kind, KIND_ORDER), _method_key(m["method"]), row)
    if not cells:
        return []
    cols = sorted({c for r in cells.values() for c in r}, key=sparsity_key)
    n = sorted({m["accuracy"]["n"] for m in models.values() if m.get("accuracy")})
    return md_table(
        [f"clean test accuracy % [95% CI], n = {'/'.join(map(str, n))}", *map(sparsity_title, cols)],
        ([row, *(cells[row].get(c, "–") for c in cols)] for row in sorted(cells, key=row_keys.__getitem__)),
    )


def attack_table(metrics: Mapping) -> list[str]:
    """Accuracy under each attack for every attacked model, beside its clean test accuracy."""
    models = _models(metrics)
    attack = metrics.get("attack") or {}
    by: dict[str, dict[str, Mapping | None]] = {}
    clean_attacked: dict[str, float] = {}
    for key, a in attack.items():
        model, recipe = key.rsplit(".", 1)
        by.setdefault(model, {})[recipe] = a.get("accuracy_under_attack")
        if a.get("original_accuracy") is not None:
            clean_attacked.setdefault(model, a["original_accuracy"])
    if not by:
        return []
    recipes = sorted({r for v in by.values() for r in v}, key=lambda r: _rank(r, RECIPE_ORDER))
    best = (metrics.get("soup") or {}).get("best_ingredient")

    def key(name: str) -> tuple:
        m = models.get(name, {})
        sp = m.get("sparsity", "0")
        return (
            _rank(m.get("kind", ""), KIND_ORDER),
            _method_key(m.get("method", "")),
            sparsity_key(DENSE if sp == "0" else sp),
            name,
        )

    sizes = sorted({d["n"] for v in by.values() for d in v.values() if d})
    near = {n for n, m in models.items() if m.get("near_constant")}

    def row(name: str) -> list[object]:
        label = f"{name} (best ingredient)" if name == best else name
        label += " †" if name in near else ""
        n = max((d["n"] for d in by[name].values() if d), default=0)
        clean = clean_attacked.get(name)
        clean_text = "–" if clean is None else f"{100 * clean:.1f}"
        return [label, n, clean_text, *(_rate(by[name].get(r)) for r in recipes)]

    header = f"accuracy under attack % [95% CI], n = {'/'.join(map(str, sizes))} seeded test rows"
    lines = md_table(
        [header, "n", "clean on those rows %", *(RECIPE_TITLES.get(r, r) for r in recipes)],
        map(row, sorted(by, key=key)),
    )
    if near & set(by):
        lines += [
            "",
            "† near-constant (predicts nearly one class): its accuracy under attack is not robustness.",
        ]
    return lines


def results_table(metrics: Mapping) -> str:
    """The Markdown between the README's markers (without the markers)."""
    clean, attacked = clean_table(metrics), attack_table(metrics)
    lines = clean + ([""] if clean and attacked else []) + attacked
    lines += [
        "",
        "From `reports/metrics.json` by `make readme-table`; every paired comparison and its verdict is in "
        "[reports/summary.md](reports/summary.md).",
    ]
    return "\n".join(lines)


def answer_block(metrics: Mapping, source: str) -> str:
    """README's "What the runs answer": the report's "Verdicts at a glance" for ``source``'s metrics
    (:func:`robustprune.report.glance_lines`), so the README states no verdict the report does not."""
    from robustprune.report import glance_lines

    head = (
        f"What the runs answer (generated by `make readme-table` from `{source}`; paired differences A − B in "
        "points with Tango 95% intervals; **better** / **worse** only when the interval excludes 0, n.s. = no "
        "measurable difference; a near-constant model gets no robustness verdict):"
    )
    return "\n".join([head, "", *glance_lines(metrics)])


def read_block(text: str, start_marker: str = START, end_marker: str = END) -> str:
    """The text between the markers (stripped); ValueError when they are missing."""
    start, end = text.find(start_marker), text.find(end_marker)
    if start < 0 or end < start:
        raise ValueError(f"no {start_marker} ... {end_marker} block")
    return text[start + len(start_marker) : end].strip()


def replace_block(text: str, table: str, start_marker: str = START, end_marker: str = END) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    read_block(text, start_marker, end_marker)  # both markers present, in order
    start, end = text.find(start_marker) + len(start_marker), text.find(end_marker)
    return f"{text[:start]}\n{table}\n{text[end:]}"


def _write_atomic(path: Path, text: str) -> None:
    """Write beside ``path`` and rename into place (robustprune.checkpoints does the same, but imports torch)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        if path.exists():
            os.chmod(tmp, path.stat().st_mode & 0o777)  # keep the file's permissions (mkstemp makes 0600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m robustprune.readme_table", description=__doc__.split("\n\n")[0]
    )
    p.add_argument(
        "--metrics", default="reports/metrics.json", help="the report's metrics (default: %(default)s)"
    )
    p.add_argument(
        "--answer-metrics",
        help="metrics behind the answer block (default: the first of "
        + ", ".join(ANSWER_SOURCES)
        + " that exists)",
    )
    p.add_argument("--write", metavar="README", help="replace the results and answer blocks of this file")
    args = p.parse_args(argv)
    try:
        table = results_table(json.loads(Path(args.metrics).read_text(encoding="utf-8")))
        source = args.answer_metrics or next((s for s in ANSWER_SOURCES if Path(s).is_file()), args.metrics)
        answer = answer_block(json.loads(Path(source).read_text(encoding="utf-8")), source)
        if args.write:
            path = Path(args.write)
            text = replace_block(path.read_text(encoding="utf-8"), table)
            if ANSWER_START in text:
                text = replace_block(text, answer, ANSWER_START, ANSWER_END)
            _write_atomic(path, text)
            print(f"{path}: results table rewritten from {args.metrics}, the answer from {source}")
        else:
            print(table + "\n\n" + answer)
    except (OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

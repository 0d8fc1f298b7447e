"""Exact coverage of the paired-difference interval (issue #23): Tango's score interval, which the report
uses, against the Clopper-Pearson-on-b/(b+c) mapping it replaced, over a grid of sample sizes and true
discordant shares (two-sided, one-sided, tiny and zero). Enumerates the trinomial exactly
(``robustprune.stats.exact_paired_coverage``); prints a table and writes
``benchmarks/results/interval_coverage.json``.

    .venv/bin/python benchmarks/interval_coverage.py            # the full grid (~1 min on 2 cores)
    .venv/bin/python benchmarks/interval_coverage.py --n 25 100  # fewer sample sizes
"""

from __future__ import annotations

import argparse
import json

import _common  # noqa: F401  (paths and offline environment first)
import numpy as np

from robustprune.stats import exact_paired_coverage, tango_interval

SHARES = [0.0, 0.001, 0.004, 0.01, 0.02, 0.04, 0.08, 0.12, 0.16, 0.24, 0.32, 0.45]
ISSUE_POINTS = [(0.012, 0.308)]  # RAKP - SparseGPT 87.5% under TextFooler, evidence run of 2026-11-30


def tango(b: np.ndarray, c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    return tango_interval(b, c, np.full(b.shape, float(n)))


def clopper_pearson_mapped(b: np.ndarray, c: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The interval the report used before issue #23 (src/robustprune/stats.py at commit 428ade1)."""
    from scipy.stats import beta

    m = b + c
    with np.errstate(invalid="ignore"):
        pl = np.where(b > 0, beta.ppf(0.025, b, c + 1), 0.0)
        ph = np.where(c > 0, beta.ppf(0.975, b + 1, c), 1.0)
    pl, ph = np.where(m > 0, pl, 0.5), np.where(m > 0, ph, 0.5)
    return m / n * (2 * pl - 1), m / n * (2 * ph - 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, nargs="+", default=[25, 100, 500])
    ap.add_argument("--out", default=str(_common.RESULTS / "interval_coverage.json"))
    args = ap.parse_args()
    meta = _common.provenance()
    points = [(pb, pc) for pb in SHARES for pc in SHARES if pb + pc <= 0.95] + ISSUE_POINTS
    rows = []
    for n in args.n:
        for pb, pc in points:
            rows.append(
                {
                    "n": n,
                    "p_b": pb,
                    "p_c": pc,
                    "tango": exact_paired_coverage(tango, n, pb, pc),
                    "clopper_pearson_mapped": exact_paired_coverage(clopper_pearson_mapped, n, pb, pc),
                }
            )
    summary = {}
    print(
        f"{'n':>5} {'min Tango':>10} {'at (p_b, p_c)':>16} {'min old':>9} {'at (p_b, p_c)':>16} {'old < 0.93':>11}"
    )
    for n in args.n:
        sel = [r for r in rows if r["n"] == n]
        t = min(sel, key=lambda r: r["tango"])
        o = min(sel, key=lambda r: r["clopper_pearson_mapped"])
        bad = sum(r["clopper_pearson_mapped"] < 0.93 for r in sel)
        summary[n] = {
            "tango_min": t["tango"],
            "tango_min_at": [t["p_b"], t["p_c"]],
            "old_min": o["clopper_pearson_mapped"],
            "old_min_at": [o["p_b"], o["p_c"]],
            "old_below_0.93": bad,
            "points": len(sel),
        }
        print(
            f"{n:>5} {t['tango']:>10.4f} {str((t['p_b'], t['p_c'])):>16} {o['clopper_pearson_mapped']:>9.4f} "
            f"{str((o['p_b'], o['p_c'])):>16} {bad:>5} of {len(sel)}"
        )
    for r in rows:
        if (r["p_b"], r["p_c"]) in ISSUE_POINTS:
            print(
                f"issue point n={r['n']} (p_b, p_c)=({r['p_b']}, {r['p_c']}): Tango {r['tango']:.4f}, "
                f"old {r['clopper_pearson_mapped']:.4f}"
            )
    out = {**meta, "confidence": 0.95, "summary": summary, "rows": rows}
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1, sort_keys=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

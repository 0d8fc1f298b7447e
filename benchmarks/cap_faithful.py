"""CAP as the reference runs it, through the real cap stage, and the verdicts the issue asks for.

Builds a scratch project (``.cache/cap-faithful/``: ``data/prepared``, ``models/base``, ``models/finetuned`` and ``models/soup``
linked read-only from ``--source``, a params file = ``--params`` with ``benchmarks/cap_faithful.yaml``'s cap
section over it), runs ``python -m flows.cap`` there, and writes ``benchmarks/results/cap_faithful.json``:

* every CAP / ablation model's test accuracy (Wilson 95%), its most predicted class and that class's share
  (near-constant: ≥ 90% of the rows, ``robustprune.degeneracy``);
* CAP 87.5% vs RAKP 87.5% (``--eval``'s ``rakp_0.875`` per-row ``correct_bits``, the same test rows):
  paired difference and verdict (``robustprune.stats.paired_difference``);
* CAP 90% against the dense soup: accuracy kept, and kept judged by the lower end of the paired difference's
  interval ((soup + low) / soup ≥ 0.9);
* the same two verdicts for the default run's committed CAP models (``--eval``'s rows), for comparison.

::

    .venv/bin/python benchmarks/cap_faithful.py --source <a project after prepare/finetune/soup>
    .venv/bin/python benchmarks/cap_faithful.py --committed-only      # the committed run's verdicts only
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import _common  # noqa: F401  (paths and offline settings first)
import yaml
from _common import RESULTS, ROOT, provenance

from robustprune.cap.report import what_ran
from robustprune.checkpoints import read_json, write_json
from robustprune.degeneracy import class_share
from robustprune.stats import paired_difference, rate

OVERLAY = ROOT / "benchmarks" / "cap_faithful.yaml"


def _scratch(source: Path, params: Path, work: Path) -> Path:
    for rel in ("data/prepared", "models/base", "models/finetuned", "models/soup"):
        link = work / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.exists():
            link.symlink_to((source / rel).resolve(), target_is_directory=True)
    raw = yaml.safe_load(params.read_text())
    raw["cap"] = yaml.safe_load(OVERLAY.read_text())["cap"]
    out = work / "params.yaml"
    out.write_text(yaml.safe_dump(raw, sort_keys=False))
    return out


def _bits(correct: list[int] | str) -> list[bool]:
    return [c in (1, "1", True) for c in correct]


def _kept(model: list[bool], soup: list[bool]) -> dict:
    d = paired_difference(model, soup)
    base = sum(soup) / len(soup)
    return {
        "retained": (sum(model) / len(model)) / base,
        "retained_low": (base + d.low) / base,  # the paired interval's lower end, as a share of the soup's
        "vs_soup": d.to_dict(),
        "target_90_met_by_lower_bound": (base + d.low) / base >= 0.9,
    }


def _committed(committed: dict[str, dict]) -> dict:
    """The default run's committed CAP models (``reports/eval.json``): CAP 87.5% vs RAKP 87.5%, CAP 90% kept."""
    base: dict = {"source": "reports/eval.json"}
    rakp = _bits(committed["rakp_0.875"]["correct_bits"])
    if "cap_0.875" in committed:
        base["cap_0.875_vs_rakp_0.875"] = paired_difference(
            _bits(committed["cap_0.875"]["correct_bits"]), rakp
        ).to_dict()
    soup_c = committed.get("soup-greedy")
    if "cap_0.9" in committed and soup_c:
        base["cap_0.9_kept_of_soup"] = _kept(
            _bits(committed["cap_0.9"]["correct_bits"]), _bits(soup_c["correct_bits"])
        )
    return base


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--source", type=Path, help="project root with data/prepared, models/ (the run needs it)")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--eval", type=Path, default=ROOT / "reports" / "eval.json", help="RAKP's per-row bits")
    ap.add_argument("--work", type=Path, default=ROOT / ".cache" / "cap-faithful")
    ap.add_argument("--out", type=Path, default=RESULTS / "cap_faithful.json")
    ap.add_argument(
        "--committed-only",
        action="store_true",
        help="no run: only the verdicts of the committed default run (--eval), e.g. where the run does not fit",
    )
    args = ap.parse_args()
    prov = provenance()
    if args.committed_only:
        committed = {r["name"]: r for r in read_json(args.eval)["models"]}
        out = {"provenance": prov, "faithful_run": None, "default_run_committed": _committed(committed)}
        write_json(args.out, out)
        print(out["default_run_committed"])
        return
    if args.source is None:
        raise SystemExit("--source is needed for the run (or --committed-only)")
    args.work.mkdir(parents=True, exist_ok=True)
    params = _scratch(args.source, args.params, args.work)
    env = {**os.environ, "PREFECT_HOME": str(args.work / ".prefect"), "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "flows.cap", "--params", str(params), "--root", str(args.work)]
    subprocess.run(cmd, cwd=ROOT, env=env, check=True)
    seconds = time.perf_counter() - t0
    cap = read_json(args.work / "reports" / "cap.json")
    models: dict[str, dict] = {}
    for run, rows in cap["runs"].items():
        for row in rows:
            m = read_json(args.work / "models" / "cap" / row["name"] / "metrics.json")
            ok = _bits(m["test_correct"])
            models[row["name"]] = {
                "run": run,
                "sparsity": row["sparsity"],
                "steps": row["steps"],
                "epoch_snapshots": m.get("epoch_snapshots", 0),
                "train_seconds": m["train_seconds"],
                "accuracy": rate(sum(ok), len(ok)).to_dict(),
                "predicted": class_share(m["test_predictions"]).to_dict(),
                "correct_bits": "".join("1" if x else "0" for x in ok),
            }
    banks = read_json(next((args.work / ".cache" / "cap-work" / "banks").glob("*/metrics.json")))
    labels = banks["test_labels"]
    soup = _bits(banks["dense_test_correct"])
    committed = {r["name"]: r for r in read_json(args.eval)["models"]}
    rakp = _bits(committed["rakp_0.875"]["correct_bits"])
    out: dict = {
        "provenance": prov,
        "command_stage": " ".join(cmd),
        "seconds": seconds,
        "settings": cap["settings"],
        "schedule": cap["schedule"],
        "what_ran": what_ran(cap),
        "dense_soup": rate(sum(soup), len(soup)).to_dict(),
        "rakp_0.875": {"accuracy": rate(sum(rakp), len(rakp)).to_dict(), "source": str(args.eval)},
        "models": models,
        "test_rows": len(labels),
    }
    if len(rakp) != len(soup):
        raise SystemExit(f"{args.eval} has {len(rakp)} test rows, the run {len(soup)}: not the same rows")
    verdicts: dict = {}
    if "cap_0.875" in models:
        d = paired_difference(_bits(models["cap_0.875"]["correct_bits"]), rakp)
        verdicts["cap_0.875_vs_rakp_0.875"] = d.to_dict()
    if "cap_0.9" in models:
        verdicts["cap_0.9_kept_of_soup"] = _kept(_bits(models["cap_0.9"]["correct_bits"]), soup)
    verdicts["ablation_near_constant"] = {
        n: m["predicted"]["near_constant"] for n, m in models.items() if m["run"] != "cap"
    }
    base = _committed(committed)
    out["verdicts"] = verdicts
    out["default_run_committed"] = base
    write_json(args.out, out)
    print(out["what_ran"])
    for n, m in models.items():
        a, p = m["accuracy"], m["predicted"]
        print(
            f"{n:<16} {100 * a['value']:.1f} [{100 * a['low']:.1f}, {100 * a['high']:.1f}]  class "
            f"{p['majority_class']} on {100 * p['share']:.1f}%"
        )
    for k, v in {**verdicts, **{f"default: {k}": v for k, v in base.items()}}.items():
        print(k, v)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Which evaluated models are (near-)constant: each model's most predicted test class and its share.

Predictions follow from ``reports/eval.json``'s per-row ``correct_bits`` and the test labels (a binary task:
``robustprune.degeneracy.predictions_from_correct``); a model predicting one class on ≥ 90% of the rows is
near-constant — its accuracy is the class share, and a comparison against it measures the collapse. Prints a
table and writes ``benchmarks/results/degeneracy.json``::

    .venv/bin/python benchmarks/degeneracy.py --eval reports/eval.json --data data/prepared
"""

from __future__ import annotations

import argparse
from pathlib import Path

import _common  # noqa: F401  (paths and offline settings first)
import pandas as pd
from _common import RESULTS, provenance

from robustprune.checkpoints import read_json, write_json
from robustprune.degeneracy import class_share, predictions_from_correct


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--eval", type=Path, default=Path("reports/eval.json"))
    ap.add_argument("--data", type=Path, default=Path("data/prepared"), help="holds test.parquet")
    ap.add_argument("--out", type=Path, default=RESULTS / "degeneracy.json")
    args = ap.parse_args()
    labels = [int(y) for y in pd.read_parquet(args.data / "test.parquet")["label"]]
    out = {"provenance": provenance(), "eval": str(args.eval), "label_share": {}, "models": {}}
    for c in sorted(set(labels)):
        out["label_share"][str(c)] = labels.count(c) / len(labels)
    for m in read_json(args.eval)["models"]:
        bits = m.get("correct_bits")
        if not bits or len(bits) != len(labels):
            continue
        share = class_share(predictions_from_correct([b == "1" for b in bits], labels))
        out["models"][m["name"]] = {"accuracy": m["correct"] / m["total"], **share.to_dict()}
    write_json(args.out, out)
    print(f"test labels: {out['label_share']}")
    print("| model | accuracy | most predicted class | its share | near-constant |\n|---|---|---|---|---|")
    for name, r in out["models"].items():
        flag = "**yes**" if r["near_constant"] else "no"
        print(
            f"| {name} | {100 * r['accuracy']:.1f} | {r['majority_class']} | {100 * r['share']:.1f} | {flag} |"
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

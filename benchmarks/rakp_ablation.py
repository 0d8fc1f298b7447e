"""RAKP rectification ablation on the default encoder: fixed alpha vs the adaptive rule, per pattern.

Reads what the default pipeline produced (``make run``): the greedy soup, the calibration set and the test
split. For each pattern and each alpha in {0, 0.25, 0.5, 1, adaptive} it prunes a fresh copy of the soup with
RAKP (alpha = 0 is exactly SparseGPT on the pruned stream) and measures test accuracy and the last block's
output error against the dense model. Prints a table; writes benchmarks/results/rakp_ablation_encoder.json.

    .venv/bin/python benchmarks/rakp_ablation.py --patterns 0.75 0.875 2:4
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from robustprune.calibration import batches  # noqa: E402
from robustprune.checkpoints import load_tensors, write_json  # noqa: E402
from robustprune.data import load_splits  # noqa: E402
from robustprune.metrics import evaluate_accuracy  # noqa: E402
from robustprune.modeling import load_classifier, load_tokenizer  # noqa: E402
from robustprune.pruning import parse_pattern  # noqa: E402
from robustprune.pruning.sequential import PruneOptions, prune_model  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patterns", nargs="+", default=["0.75", "0.875", "2:4"])
    ap.add_argument("--alphas", nargs="+", default=["0", "0.25", "0.5", "1", "adaptive"])
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "soup" / "greedy")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "rakp_ablation_encoder.json"
    )
    args = ap.parse_args(argv)
    calib = batches(load_tensors(ROOT / "data" / "calibration" / "calibration.safetensors"), 32)
    test = load_splits(ROOT / "data" / "prepared").test
    tok = load_tokenizer(args.model)
    rows = []
    for pattern in args.patterns:
        for alpha in args.alphas:
            model = load_classifier(args.model)
            opts = PruneOptions(
                method="rakp",
                pattern=parse_pattern(pattern),
                alpha=None if alpha == "adaptive" else float(alpha),
            )
            t0 = time.perf_counter()
            out = prune_model(model, calib, opts)
            secs = time.perf_counter() - t0
            acc = evaluate_accuracy(
                model, tok, test["text"].tolist(), test["label"].tolist(), max_length=64
            ).accuracy
            rows.append(
                {
                    "pattern": pattern,
                    "alpha": alpha,
                    "accuracy": acc,
                    "prune_s": round(secs, 1),
                    "last_block_output_error": out.blocks[-1].output_error,
                    "alpha_per_block": [b.alpha for b in out.blocks],
                }
            )
            print(
                f"{pattern:>6} alpha={alpha:>8}  acc {100 * acc:6.2f}%  drift {rows[-1]['last_block_output_error']:.4f}"
                f"  alphas {rows[-1]['alpha_per_block']}  {secs:.1f}s",
                flush=True,
            )
    write_json(
        args.out,
        {
            "model": str(args.model.relative_to(ROOT)),
            "calibration_batches": len(calib),
            "test_examples": len(test),
            "rows": rows,
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

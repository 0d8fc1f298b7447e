"""RAKP rectification ablation on the default encoder: fixed alpha vs the adaptive rule, per pattern.

Reads what the default pipeline produced (``make run``): the greedy soup, the calibration set, the splits and
the attack resources. For each pattern and each alpha in {0, 0.25, 0.5, 1, adaptive (judged at the block's
output), adaptive-model (judged at the last block's output), adaptive-output (judged by the KL of the
classifier's output distribution)} it prunes a fresh copy of the soup with RAKP
(alpha = 0 is exactly SparseGPT on the pruned stream) and measures validation and test accuracy, the last
block's output error against the dense model and, with ``--attack-n``, the accuracy under attack (``--attack-recipe``,
default TextFooler) on
the attack stage's seeded test rows. The "best fixed alpha" is reported twice: chosen on validation accuracy
(what a user can do) and on test accuracy (an oracle). Prints a table; writes
benchmarks/results/rakp_ablation_encoder.json.

    .venv/bin/python benchmarks/rakp_ablation.py --patterns 0.75 0.875 2:4 --attack-n 50 --threads 1
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
from robustprune.options import alpha_spec  # noqa: E402
from robustprune.pruning import parse_pattern  # noqa: E402
from robustprune.pruning.sequential import PruneOptions, prune_model  # noqa: E402


def is_rule(alpha: str) -> bool:
    """Anything but a fixed number: the adaptive rules and the depth schedules."""
    return alpha_spec(alpha)["alpha"] is None


def attack_accuracy(
    model, tok, test, rows: list[int], bundle: Path, max_length: int, recipe: str = "textfooler"
) -> dict:
    """``recipe`` on ``rows`` of the test split (the attack stage's recipes and resources)."""
    from robustprune.attacks import build_attack
    from robustprune.attacks.bundle import load_bundle
    from robustprune.attacks.metrics import summarize
    from robustprune.attacks.runner import attack_examples
    from robustprune.attacks.similarity import MeanPooledEncoder
    from robustprune.attacks.textattack_env import import_textattack
    from robustprune.attacks.wrapper import FastClassifierWrapper

    import_textattack()
    global _RES, _ENC  # one bundle and one sentence-encoder cache for every model of the run
    if "_RES" not in globals():
        _RES = load_bundle(bundle)
        _ENC = MeanPooledEncoder.from_dir(_RES.encoder_dir)
    wrapper = FastClassifierWrapper(model, tok, max_length=max_length, batch_size=32)
    attack = build_attack(recipe, wrapper, _RES, encoder=_ENC)
    examples = [(str(test["text"].iloc[i]), int(test["label"].iloc[i])) for i in rows]
    return summarize(attack_examples(attack, examples, progress=False)).to_dict()


def summarize_rows(rows: list[dict]) -> dict:
    """Per pattern: the best fixed alpha by validation and by test accuracy, against each adaptive rule."""
    by_pattern, lines = {}, []
    for pattern in dict.fromkeys(r["pattern"] for r in rows):
        fixed = [r for r in rows if r["pattern"] == pattern and not is_rule(r["alpha"])]
        adaptive = [r for r in rows if r["pattern"] == pattern and is_rule(r["alpha"])]
        if not fixed:
            continue
        by_val = max(fixed, key=lambda r: (r["val_accuracy"], -float(r["alpha"])))
        by_test = max(fixed, key=lambda r: (r["accuracy"], -float(r["alpha"])))
        entry = {"best_fixed_by_val": by_val["alpha"], "best_fixed_by_test": by_test["alpha"], "adaptive": {}}

        def aua(r: dict) -> float | None:
            return 100 * r["attack"]["accuracy_under_attack"] if r.get("attack") else None

        for r in adaptive:
            entry["adaptive"][r["alpha"]] = {
                "test_minus_best_by_val": round(100 * (r["accuracy"] - by_val["accuracy"]), 2),
                "test_minus_best_by_test": round(100 * (r["accuracy"] - by_test["accuracy"]), 2),
                "aua_minus_best_by_val": None
                if aua(r) is None or aua(by_val) is None
                else round(aua(r) - aua(by_val), 2),
            }
            e = entry["adaptive"][r["alpha"]]
            lines.append(
                f"{pattern:>6} {r['alpha']:>14}: test {e['test_minus_best_by_val']:+.2f} vs alpha={by_val['alpha']} "
                f"(best on val), {e['test_minus_best_by_test']:+.2f} vs alpha={by_test['alpha']} (best on test)"
                + (
                    f"; AuA {e['aua_minus_best_by_val']:+.1f} vs best on val"
                    if e["aua_minus_best_by_val"] is not None
                    else ""
                )
            )
        by_pattern[pattern] = entry
    return {"by_pattern": by_pattern, "lines": lines}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patterns", nargs="+", default=["0.75", "0.875", "2:4"])
    ap.add_argument(
        "--alphas",
        nargs="+",
        default=["0", "0.25", "0.5", "1", "adaptive"],
        help="fixed numbers, adaptive | adaptive-block | adaptive-model, or depth:A-B (linear schedule)",
    )
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "soup" / "greedy")
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "rakp_ablation_encoder.json"
    )
    ap.add_argument("--attack-n", type=int, default=0, help="attack this many seeded test rows (0 = skip)")
    ap.add_argument(
        "--attack-recipe", default="textfooler", choices=("textfooler", "bert-attack", "textbugger")
    )
    ap.add_argument("--attack-seed", type=int, default=0)
    ap.add_argument("--bundle", type=Path, default=ROOT / "models" / "attack")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import numpy as np

    for a in args.alphas:
        try:
            alpha_spec(a)
        except ValueError as e:
            ap.error(f"--alphas: {e}")
    calib = batches(load_tensors(ROOT / "data" / "calibration" / "calibration.safetensors"), 32)
    splits = load_splits(ROOT / "data" / "prepared")
    test, val = splits.test, splits.validation
    rng = np.random.default_rng(args.attack_seed)
    attack_rows = sorted(
        int(i) for i in rng.choice(len(test), size=min(args.attack_n, len(test)), replace=False)
    )
    tok = load_tokenizer(args.model)
    rows = []
    for pattern in args.patterns:
        for alpha in args.alphas:
            model = load_classifier(args.model)
            opts = PruneOptions(
                method="rakp",
                pattern=parse_pattern(pattern),
                **alpha_spec(alpha),
            )
            t0 = time.perf_counter()
            out = prune_model(model, calib, opts)
            secs = time.perf_counter() - t0
            acc = evaluate_accuracy(
                model, tok, test["text"].tolist(), test["label"].tolist(), max_length=64
            ).accuracy
            val_acc = evaluate_accuracy(
                model, tok, val["text"].tolist(), val["label"].tolist(), max_length=64
            ).accuracy
            attacked = (
                attack_accuracy(model, tok, test, attack_rows, args.bundle, 64, args.attack_recipe)
                if attack_rows
                else None
            )
            rows.append(
                {
                    "pattern": pattern,
                    "alpha": alpha,
                    "accuracy": acc,
                    "val_accuracy": val_acc,
                    "attack": attacked,
                    "prune_s": round(secs, 1),
                    "last_block_output_error": out.blocks[-1].output_error,
                    "alpha_per_block": [b.alpha for b in out.blocks],
                }
            )
            aua = f"  AuA {100 * attacked['accuracy_under_attack']:.1f}%" if attacked else ""
            print(
                f"{pattern:>6} alpha={alpha:>14}  val {100 * val_acc:6.2f}%  test {100 * acc:6.2f}%{aua}  drift {rows[-1]['last_block_output_error']:.4f}"
                f"  alphas {rows[-1]['alpha_per_block']}  {secs:.1f}s",
                flush=True,
            )
    summary = summarize_rows(rows)
    for line in summary["lines"]:
        print(line)
    write_json(
        args.out,
        {
            "model": str(args.model.relative_to(ROOT)),
            "calibration_batches": len(calib),
            "test_examples": len(test),
            "validation_examples": len(val),
            "attack": {"recipe": args.attack_recipe, "rows": attack_rows, "seed": args.attack_seed},
            "rows": rows,
            "summary": summary["by_pattern"],
        },
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

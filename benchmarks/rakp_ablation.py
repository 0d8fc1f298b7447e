"""RAKP on the default encoder: rectification strength α, ridge, head refit and calibration size, per pattern.

Reads what the default pipeline produced (``make run``): the greedy soup, the prepared splits, the base
tokenizer, the calibration set and (with ``--attack-n``) the attack resources. For every calibration size
x pattern x α x ridge it prunes a fresh copy of the soup with RAKP (α = 0 is exactly SparseGPT on the
pruned stream) and measures validation and test accuracy and the last block's output error against the
dense model; with ``--refit-head on`` the same pruned encoder is measured again after RAKP's head refit
(pooler + classifier rectified with the last block's α: ``prune.rakp.refit_head``), so head off / on
share one prune. α takes fixed numbers, the adaptive rules or depth schedules (``robustprune.options.
alpha_spec``). The ridge is a fraction of ``mean(diag H̃)``, as ``prune.rakp.ridge``.

Calibration: without ``--calib-samples`` the pipeline's ``data/calibration`` set; with it, sets of those
sizes built here (never written to ``data/``) by the calibrate stage's library functions
(``robustprune.calibration.sample_texts`` + ``tokenize`` with ``calibrate.seed`` and ``data.max_length``
from params.yaml); the set the size ``calibrate.num_samples`` gives is checked equal to data/calibration.

Every test accuracy carries its 95% Wilson interval, and every row is compared, paired on the same test
examples, with the current default (params.yaml's ``prune.rakp`` alpha / ridge / refit_head and
``calibrate.num_samples``) at the same pattern (``robustprune.stats.paired_difference``). The "best fixed α"
is also reported as chosen on validation accuracy (what a user can do) and on test accuracy (an oracle).
Prints a table; writes ``--out`` (JSON with the command and date).

    nice -n 10 .venv/bin/python benchmarks/rakp_ablation.py --patterns 0.75 0.875 2:4 --alphas 0.25 1 \\
        --ridges 0.1 1e-4 --refit-head off on --calib-samples 128 256 --threads 2 \\
        --out benchmarks/results/rakp_paper_encoder.json
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import _common  # noqa: F401 - sets sys.path and the offline environment first
from _common import RESULTS, ROOT, provenance, set_threads, timed

from robustprune.calibration import batches, sample_texts, tokenize
from robustprune.checkpoints import load_tensors, read_json, write_json
from robustprune.config import load_params
from robustprune.data import load_splits
from robustprune.metrics import predict_logits
from robustprune.modeling import find_blocks, load_classifier, load_tokenizer
from robustprune.options import alpha_spec
from robustprune.pruning import parse_pattern
from robustprune.pruning.sequential import (
    PruneOptions,
    RakpOptions,
    capture_block_inputs,
    check_options,
    finish_head,
    prune_block,
)
from robustprune.stats import paired_difference, rate


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
    rows = [r for r in rows if r.get("refit_head", "off") == "off"]
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


def calibration_sets(sizes: list[int], params, tok) -> dict[str, list[dict]]:  # noqa: ANN001
    """``{label: batches}``: the pipeline's set ("pipeline") or sets of ``sizes`` built as the stage does."""
    stored = load_tensors(ROOT / "data" / "calibration" / "calibration.safetensors")
    bs = params.calibrate.batch_size
    if not sizes:
        return {"pipeline": batches(stored, bs)}
    train = load_splits(ROOT / "data" / "prepared").train["text"].tolist()
    out = {}
    for n in sizes:
        enc = tokenize(tok, sample_texts(train, n, params.calibrate.seed), params.data.max_length)
        if n == params.calibrate.num_samples:
            same = stored.keys() == enc.keys() and all(stored[k].equal(enc[k]) for k in enc)
            if not same:
                raise SystemExit(
                    f"the {n}-text set built here differs from data/calibration: stale pipeline run?"
                )
        out[str(n)] = batches(enc, bs)
    return out


def correct_flags(model, tok, split, max_length: int) -> list[bool]:  # noqa: ANN001
    logits = predict_logits(model, tok, split["text"].tolist(), max_length=max_length)
    return [bool(p == y) for p, y in zip(logits.argmax(-1), split["label"].tolist(), strict=True)]


def default_key(params, calib_labels: list[str]) -> dict:  # noqa: ANN001
    """The configuration the rows are compared with: params.yaml's RAKP settings and calibration size."""
    rk = params.prune.rakp
    n = str(params.calibrate.num_samples)
    return {
        "alpha": f"{rk.alpha:g}" if isinstance(rk.alpha, float) else str(rk.alpha),
        "ridge": rk.ridge,
        "refit_head": "on" if rk.refit_head else "off",
        "calib": n if n in calib_labels else calib_labels[0],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--patterns", nargs="+", default=["0.75", "0.875", "2:4"])
    ap.add_argument(
        "--alphas",
        nargs="+",
        default=["0", "0.25", "0.5", "1", "adaptive"],
        help="fixed numbers, adaptive | adaptive-block | adaptive-model | adaptive-output, or depth:A-B",
    )
    ap.add_argument("--ridges", nargs="+", type=float, default=None, help="default: params.yaml's ridge")
    ap.add_argument("--refit-head", nargs="+", choices=("off", "on"), default=["off"])
    ap.add_argument("--calib-samples", nargs="+", type=int, default=[], help="default: data/calibration")
    ap.add_argument("--params", type=Path, default=ROOT / "params.yaml")
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "soup" / "greedy")
    ap.add_argument("--out", type=Path, default=RESULTS / "rakp_ablation_encoder.json")
    ap.add_argument("--attack-n", type=int, default=0, help="attack this many seeded test rows (0 = skip)")
    ap.add_argument(
        "--attack-recipe", default="textfooler", choices=("textfooler", "bert-attack", "textbugger")
    )
    ap.add_argument("--attack-seed", type=int, default=0)
    ap.add_argument("--bundle", type=Path, default=ROOT / "models" / "attack")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument(
        "--no-val", action="store_true", help="skip validation accuracy (and the best-by-val summary)"
    )
    ap.add_argument(
        "--resume",
        action="store_true",
        help="keep the rows already in --out and measure only the missing ones",
    )
    args = ap.parse_args(argv)
    set_threads(args.threads)
    import numpy as np

    for a in args.alphas:
        try:
            alpha_spec(a)
        except ValueError as e:
            ap.error(f"--alphas: {e}")
    params = load_params(args.params)
    ridges = args.ridges or [params.prune.rakp.ridge]
    meta = provenance(argv)
    max_length = params.data.max_length
    tok = load_tokenizer(args.model)
    calib_sets = calibration_sets(args.calib_samples, params, load_tokenizer(ROOT / "models" / "base"))
    base = default_key(params, list(calib_sets))
    splits = load_splits(ROOT / "data" / "prepared")
    test, val = splits.test, splits.validation
    rng = np.random.default_rng(args.attack_seed)
    attack_rows = sorted(
        int(i) for i in rng.choice(len(test), size=min(args.attack_n, len(test)), replace=False)
    )
    dense_model = load_classifier(args.model)
    dense_test = correct_flags(dense_model, tok, test, max_length)
    dense_acc = rate(sum(dense_test), len(dense_test))
    rows = []

    def save() -> dict:
        """Paired differences against the default configuration (same pattern), and the results file."""
        for r in rows:
            ref = next(
                (
                    b
                    for b in rows
                    if b["pattern"] == r["pattern"]
                    and b["calib"] == base["calib"]
                    and b["alpha"] == base["alpha"]
                    and b["ridge"] == base["ridge"]
                    and b["refit_head"] == base["refit_head"]
                ),
                None,
            )
            if ref is not None and ref is not r:
                a_flags = [c == "1" for c in r["test_correct"]]
                r["vs_default"] = paired_difference(
                    a_flags, [c == "1" for c in ref["test_correct"]]
                ).to_dict()
        result = {
            **meta,
            "model": str(args.model.relative_to(ROOT))
            if args.model.is_relative_to(ROOT)
            else str(args.model),
            "ridge_means": "fraction of mean(diag H~) (prune.rakp.ridge)",
            "head_alpha": "the last block's alpha",
            "default": base,
            "dense": {
                "accuracy": dense_acc.value,
                "accuracy_ci95": [dense_acc.low, dense_acc.high],
                "test_correct": "".join("1" if f else "0" for f in dense_test),
            },
            "calibration": {k: sum(int(b["input_ids"].shape[0]) for b in v) for k, v in calib_sets.items()},
            "test_examples": len(test),
            "validation_examples": None if args.no_val else len(val),
            "attack": {"recipe": args.attack_recipe, "rows": attack_rows, "seed": args.attack_seed},
            "rows": rows,
            "summary": None if args.no_val else summarize_rows(rows)["by_pattern"],
        }
        write_json(args.out, result)
        return result

    def measure(model, row: dict) -> None:  # noqa: ANN001
        flags = correct_flags(model, tok, test, max_length)
        val_flags = None if args.no_val else correct_flags(model, tok, val, max_length)
        acc = rate(sum(flags), len(flags))
        row.update(
            accuracy=acc.value,
            accuracy_ci95=[acc.low, acc.high],
            val_accuracy=None if val_flags is None else sum(val_flags) / len(val_flags),
            test_correct="".join("1" if f else "0" for f in flags),
        )
        row["attack"] = (
            attack_accuracy(model, tok, test, attack_rows, args.bundle, max_length, args.attack_recipe)
            if attack_rows
            else None
        )
        rows.append(row)
        aua = f"  AuA {100 * row['attack']['accuracy_under_attack']:.1f}%" if row["attack"] else ""
        val_s = "" if row["val_accuracy"] is None else f"  val {100 * row['val_accuracy']:5.1f}"
        print(
            f"calib {row['calib']:>8} {row['pattern']:>6} alpha={row['alpha']:>8} ridge={row['ridge']:<7g} "
            f"head={row['refit_head']:<3}{val_s}  test {acc.pct()}{aua}  "
            f"drift {row['last_block_output_error']:.4f}  {row['prune_s']:.0f}s",
            flush=True,
        )
        save()  # after every row: a long run that is stopped keeps what it measured

    if args.resume and args.out.is_file():
        rows.extend(read_json(args.out)["rows"])
    heads = args.refit_head
    done = {(r["calib"], r["pattern"], r["alpha"], r["ridge"], r["refit_head"]) for r in rows}
    plan = [
        (calib_label, pattern, alpha, ridge)
        for calib_label in calib_sets
        for pattern in args.patterns
        for alpha in args.alphas
        for ridge in (ridges if alpha_spec(alpha)["alpha"] != 0 else ridges[:1])  # α = 0: no ridge
        if any((calib_label, pattern, alpha, ridge, h) not in done for h in heads)
    ]
    # first the default and the paper's setting (largest calibration set, α = 1, smallest ridge) of every
    # pattern: the comparison the run is for is there early; then the rest in grid order
    key_settings = {(base["calib"], base["alpha"], base["ridge"]), (list(calib_sets)[-1], "1", min(ridges))}
    plan.sort(key=lambda c: (c[0], c[2], c[3]) not in key_settings)
    for calib_label, pattern, alpha, ridge in plan:
        calib = calib_sets[calib_label]
        rakp = RakpOptions(**alpha_spec(alpha), ridge=ridge)
        opts = PruneOptions(method="rakp", pattern=parse_pattern(pattern), rakp=rakp)
        model = load_classifier(args.model)
        check_options(model, opts)
        with timed() as t:  # prune_model's loop, written out to measure before the head refit
            inputs = capture_block_inputs(model, calib)
            reports = []
            for i in range(len(find_blocks(model))):
                inputs, _, rep = prune_block(model, i, inputs, opts)
                reports.append(rep)
        row = {
            "calib": calib_label,
            "calib_texts": sum(int(b["input_ids"].shape[0]) for b in calib),
            "pattern": pattern,
            "alpha": alpha,
            "ridge": ridge,
            "prune_s": round(t["seconds"], 1),
            "last_block_output_error": reports[-1].output_error,
            "alpha_per_block": [b.alpha for b in reports],
        }
        if "off" in heads and (calib_label, pattern, alpha, ridge, "off") not in done:
            measure(model if heads == ["off"] else copy.deepcopy(model), {**row, "refit_head": "off"})
        if "on" in heads and (calib_label, pattern, alpha, ridge, "on") not in done:
            head_rakp = RakpOptions(**{**rakp.__dict__, "refit_head": True})
            head_opts = PruneOptions(method="rakp", pattern=opts.pattern, rakp=head_rakp)
            with timed() as th:
                hr = finish_head(model, inputs, head_opts, reports)
            measure(model, {**row, "refit_head": "on", "head_s": round(th["seconds"], 2), "head": vars(hr)})
    result = save()
    print(f"\npaired test-accuracy difference vs the default ({base}), 95% interval:")
    for r in result["rows"]:
        if "vs_default" in r:
            d = r["vs_default"]
            print(
                f"  calib {r['calib']:>8} {r['pattern']:>6} alpha={r['alpha']:>6} ridge={r['ridge']:<7g} "
                f"head={r['refit_head']:<3} {100 * d['diff']:+5.1f} [{100 * d['low']:+5.1f}, {100 * d['high']:+5.1f}]"
                f"  p={d['p_value']:.3f}  {d['verdict']}"
            )
    for line in [] if args.no_val else summarize_rows(rows)["lines"]:
        print(line)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

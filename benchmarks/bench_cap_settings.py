"""CAP's staged run under other settings, without Prefect: test accuracy per stage for each variant.

The same library calls as ``tasks/cap.py`` (banks from the pre-trained encoder and the soup, one
:func:`robustprune.cap.train.train_stage` per sparsity, SnC snapshots between stages), with the settings of a
params file's ``cap`` section overridden per variant. Variants are ``name:key=value,key=value`` (keys of
``cap``; ``modules`` as ``prc+fic+snc`` or ``none``; ``run=ablation`` trains with ``cap.ablation_settings``
as the stage trains an ablation run). The student starts as ``cap.start`` says (``tasks.cap.start_model``),
the stages follow ``cap.path`` / ``cap.length_unit`` and SnC ``cap.snapshots``, as in the stage. Every
variant uses the same examples and banks, so its stages' test outcomes are paired with the first variant's;
each stage records its most predicted class and that class's share of the test rows.
Prints a table (accuracy % [95% interval], paired difference to the first variant) and writes JSON::

    .venv/bin/python benchmarks/bench_cap_settings.py --variants default: lr3e-4:lr=3e-4 \\
        nocl:modules=none --out benchmarks/results/cap_settings.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import _common  # noqa: F401  (paths and offline settings first)
import numpy as np
import torch
import yaml
from _common import RESULTS, parse_run
from transformers import AutoModel

from robustprune.cap import masks as cap_masks
from robustprune.cap.banks import encode, stack
from robustprune.cap.examples import Examples
from robustprune.cap.train import EpochSnapshots, epoch_steps, train_stage
from robustprune.checkpoints import write_json
from robustprune.config import parse_params
from robustprune.data import load_splits
from robustprune.degeneracy import class_share
from robustprune.metrics import predict_logits
from robustprune.modeling import load_classifier, load_tokenizer
from robustprune.stats import paired_difference, rate
from tasks.cap import run_options, run_stages, start_model
from tasks.common import Layout


def _parse_variant(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    out: dict = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        if key == "run":
            out[key] = value
        elif key in ("modules",):
            out[key] = [] if value == "none" else value.split("+")
        elif key == "sparsities":
            out[key] = [float(x) for x in value.split("+")]
        else:
            out[key] = yaml.safe_load(value)
    if "modules" in out:  # a variant trains one module set: no ablation list to clash with it
        out.setdefault("ablations", [])
    return name, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--root", default=".")
    ap.add_argument("--variants", nargs="+", default=["default:"])
    args, prov = parse_run(ap, RESULTS / "cap_settings.json")
    root = Path(args.root)
    raw = yaml.safe_load(Path(args.params).read_text())
    base = parse_params(raw)
    soup = root / "models" / "soup" / base.soup.prune_source
    tok = load_tokenizer(soup)
    splits = load_splits(root / "data" / "prepared")
    test_texts, test_labels = splits.test.text.tolist(), splits.test.label.to_numpy()
    results: dict = {"provenance": prov, "args": vars(args), "variants": {}}
    first: dict[float, list[bool]] | None = None
    cache: dict = {}
    for spec in args.variants:
        name, over = _parse_variant(spec)
        params = parse_params(
            {**raw, "cap": {**raw.get("cap", {}), **{k: v for k, v in over.items() if k != "run"}}}
        )
        cap = params.cap
        rows = np.random.default_rng(cap.seed).permutation(len(splits.train))
        rows = np.sort(rows[: cap.train_examples]) if cap.train_examples else np.arange(len(splits.train))
        ex = Examples.from_texts(
            tok, splits.train.text.iloc[rows].tolist(), splits.train.label.iloc[rows].tolist(), 64
        )
        bkey = (cap.train_examples, cap.seed, cap.representation)
        if bkey not in cache:
            prc = encode(AutoModel.from_pretrained(str(root / "models" / "base")), ex, cap.representation)
            cache[bkey] = (prc.vectors, encode(load_classifier(soup), ex, cap.representation))
        prc_v, fic = cache[bkey]
        # "run" names the run as the stage does: cap (the main module set) or an ablation (its own settings)
        run = cap.run_name(cap.modules) if over.get("run") != "ablation" else "ablation"
        opts = run_options(cap, run)
        snaps: list[torch.Tensor] = []
        out_rows, outcomes = [], {}
        t0 = time.perf_counter()
        model, done_steps = None, 0
        for st in run_stages(cap, len(ex)):
            if model is None or cap.path == "separate":
                model = start_model(params, Layout(root))
                cap_masks.attach(model, cap.criterion)
                snaps, done_steps = [], 0
            bank = {}
            if "prc" in cap.modules:
                bank["prc"] = (stack([prc_v]), ex.labels)
            if "fic" in cap.modules:
                bank["fic"] = (stack([fic.vectors]), ex.labels)
            if "snc" in cap.modules and snaps:
                bank["snc"] = (stack(snaps), ex.labels)
            epochs = (
                EpochSnapshots(every=epoch_steps(len(ex), cap.batch_size), offset=done_steps)
                if "snc" in cap.modules and cap.snapshots == "epoch"
                else None
            )
            res = train_stage(
                model, ex, fic.logits, bank, opts, steps=st.steps, seed=cap.seed + 1000 * st.index,
                stage=st, max_sparsity=max(cap.sparsities), snapshots=epochs,
            )  # fmt: skip
            done_steps += st.steps
            if "snc" in cap.modules and cap.snapshots == "epoch":
                snaps += res.snapshots
            elif "snc" in cap.modules:
                snaps.append(encode(model, ex, cap.representation).vectors)
            logits = predict_logits(model, tok, test_texts, batch_size=64, max_length=64)
            pred = logits.argmax(-1)
            ok = [bool(x) for x in pred == test_labels]
            outcomes[st.final] = ok
            r = rate(sum(ok), len(ok))
            row = {
                "sparsity": st.final,
                "accuracy": r.to_dict(),
                "loss": res.tail_loss(),
                "parts": res.parts,
                "steps": st.steps,
                "predicted": class_share([int(x) for x in pred]).to_dict(),
                "test_correct": "".join("1" if x else "0" for x in ok),
            }
            if first is not None and st.final in first:
                row["vs_first"] = paired_difference(ok, first[st.final]).to_dict()
            out_rows.append(row)
            diff = (
                f"  {row['vs_first']['diff'] * 100:+.1f} ({row['vs_first']['verdict']})"
                if "vs_first" in row
                else ""
            )
            share = row["predicted"]
            flag = " NEAR-CONSTANT" if share["near_constant"] else ""
            print(
                f"{name:<14} {100 * st.final:5.1f}%  {r.pct()}{diff}  "
                f"(class {share['majority_class']} on {100 * share['share']:.1f}%{flag})",
                flush=True,
            )
        if first is None:
            first = outcomes
        results["variants"][name] = {
            "overrides": over,
            "stages": out_rows,
            "seconds": time.perf_counter() - t0,
        }
        write_json(args.out, results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""What one CAP training step costs, as a ratio to a plain fine-tuning step in the same run.

Variants (all batch ``--batch-size`` on the same seeded batches, ``--steps`` timed steps after one warm-up):

* ``finetune``: CE only, no masks (the baseline: what ``finetune.py`` does per step);
* ``nocl``: magnitude masks recomputed every step + CE + KD (CAP's ablation ``modules: []``);
* ``cap``: the same + PrC, FiC and SnC (3 snapshots) contrastive terms with ``--extra-negatives``;
* ``cap-interval4``: ``cap`` with the masks recomputed every 4th step (``cap.mask_interval: 4``);
* ``cap-movement``: ``cap`` with movement scores (straight-through, a second optimiser group).

Banks are random unit vectors (their content does not change the cost). Prints a table and writes
``benchmarks/results/cap_steps.json``::

    .venv/bin/python benchmarks/bench_cap.py --model models/soup/greedy --threads 2
"""

from __future__ import annotations

import argparse

import _common  # noqa: F401  (paths and offline settings first)
import torch
import torch.nn.functional as F
from _common import RESULTS, parse_run

from robustprune.cap import masks as cap_masks
from robustprune.cap.banks import stack
from robustprune.cap.examples import Examples
from robustprune.cap.loss import LossWeights
from robustprune.cap.schedule import Stage
from robustprune.cap.train import TrainOptions, train_stage
from robustprune.checkpoints import write_json
from robustprune.data import load_splits
from robustprune.modeling import load_classifier, load_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="models/soup/greedy")
    ap.add_argument("--data", default="data/prepared")
    ap.add_argument("--examples", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--extra-negatives", type=int, default=256)
    args, prov = parse_run(ap, RESULTS / "cap_steps.json")
    tok = load_tokenizer(args.model)
    train = load_splits(args.data).train.iloc[: args.examples]
    ex = Examples.from_texts(tok, train.text.tolist(), train.label.tolist(), 64)
    n = len(ex)
    g = torch.Generator().manual_seed(0)
    hidden = load_classifier(args.model).config.hidden_size

    def vecs(r: int) -> torch.Tensor:
        return stack([F.normalize(torch.randn(n, hidden, generator=g), dim=-1) for _ in range(r)])

    banks = {"prc": (vecs(1), ex.labels), "fic": (vecs(1), ex.labels), "snc": (vecs(3), ex.labels)}
    teacher = torch.randn(n, 2, generator=g)
    base = TrainOptions(batch_size=args.batch_size, extra_negatives=args.extra_negatives)
    ce_only = TrainOptions(
        batch_size=args.batch_size, weights=LossWeights(ce=1.0, kd=0.0, unsup=0.0, sup=0.0)
    )
    variants = {
        "finetune": (None, ce_only, {}, None),
        "nocl": ("magnitude", base, {}, teacher),
        "cap": ("magnitude", base, banks, teacher),
        "cap-interval4": ("magnitude", TrainOptions(**{**base.__dict__, "mask_interval": 4}), banks, teacher),
        "cap-movement": ("movement", base, banks, teacher),
    }
    rows = {}
    for name, (criterion, opts, bank, t_logits) in variants.items():
        model = load_classifier(args.model)
        stage = None
        if criterion:
            cap_masks.attach(model, criterion)
            stage = Stage(0, 0.5, 0.875, 0, args.steps, 1)
        train_stage(model, ex, t_logits, bank, opts, steps=1, seed=0, stage=stage)  # warm-up
        res = train_stage(model, ex, t_logits, bank, opts, steps=args.steps, seed=1, stage=stage)
        rows[name] = {"seconds_per_step": res.seconds / args.steps}
    base_s = rows["finetune"]["seconds_per_step"]
    print(f"{'variant':<16}{'s/step':>10}{'x finetune':>12}")
    for name, r in rows.items():
        r["ratio"] = r["seconds_per_step"] / base_s
        print(f"{name:<16}{r['seconds_per_step']:>10.3f}{r['ratio']:>12.2f}")
    write_json(args.out, {"provenance": prov, "args": vars(args), "rows": rows})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

"""Plain vs adversarial fine-tuning on the default data (issue #24): which ingredient kind resists the attacks,
and at what cost.

Four ingredients from the same pre-trained MiniLM, the same seeded head (``finetune.head_seed``), the same
learning rate, batch, warm-up, weight decay and data-order seed, differing only by their adversarial kind. By
default they train on a seeded 3000-row subset of the default training split for one epoch: 94 steps of 32,
the length of a default ingredient (``params.yaml``: half an epoch of 6000), so that four kinds, their curves
and 1,200 attacks fit about two hours on two shared cores; ``--full`` trains on all 6000 rows for 3 epochs.

* ``plain``: ``robustprune.finetune.finetune``;
* ``freelb``: FreeLB as the reference runs SST-2 (K 2, adv-lr 0.1, init-mag 0.6, max-norm 0 = unbounded, dropout
  masks shared across the K steps: ``params-paper.yaml``'s ``freelb-ref-*`` settings);
* ``augment``: one perturbed copy of every training text per epoch from the attacks' candidate spaces
  (``robustprune.augment``, 20% of the words, equal mix);
* ``a2t``: textattack's Trainer with A2T's attack (``robustprune.a2t``): a clean part, then ``max(1, --epochs)``
  epochs each adding ``--a2t-adv`` successful adversarial texts. The clean part is, by default, ``plain``'s run
  (the Trainer continues from plain's final model with ``num_clean_epochs 0``: the Trainer's epochs are whole,
  and a clean epoch of its own would cost as much as plain again); ``--a2t-clean-epoch`` (and ``--full``) gives
  it its own clean epoch, as ``finetune.variants[].a2t`` trains.

Every kind is scored at checkpoints along its training (the curve that sets an ingredient's length):
validation accuracy on the whole validation split, accuracy under TextFooler on ``--val-rows`` seeded
validation rows (the soup criterion's rows: the first rows of the same seeded permutation) and under the cheap
A2T attack on the same rows (a candidate proxy for the soup criterion: Spearman of the two over every
checkpoint). The final model of each kind: clean accuracy on the whole test split and accuracy under
TextFooler, BERT-Attack and TextBugger on ``--rows`` seeded test rows (the attack stage's rows: the first rows
of its seeded permutation), each with its Wilson interval, and paired differences against ``plain`` on the
same rows (``robustprune.stats.paired_difference``). Training seconds and seconds per step are wall times in
this run (the load average is recorded: the machine is shared).

    python benchmarks/robust_training.py    # 3000 training rows x 1 epoch (94 steps, as a default ingredient), 100 rows
    python benchmarks/robust_training.py --full                # 3 epochs, 200 test rows, 100 validation rows
    python benchmarks/robust_training.py --data /work/evidence/data/prepared \\
        --attack-resources /work/evidence/models/attack --base-model /work/evidence/models/base

Writes ``benchmarks/results/robust_training.json`` (rewritten after every kind, so a stopped run keeps what it
finished).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from pathlib import Path

import _common  # noqa: F401 - paths and offline environment first
from _common import RESULTS, ROOT, provenance, set_threads

KINDS = ("plain", "augment", "a2t", "freelb")  # plain first: the others are paired with it
RECIPES = ("textfooler", "bert-attack", "textbugger")
FREELB_REFERENCE = {"steps": 2, "step_size": 0.1, "max_norm": 0.0, "init_mag": 0.6, "share_dropout": True}


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    p.add_argument("--attack-resources", type=Path, default=ROOT / "models" / "attack")
    p.add_argument("--base-model", type=Path, default=ROOT / "models" / "base")
    p.add_argument("--kinds", default=",".join(KINDS))
    p.add_argument(
        "--epochs", type=float, default=1.0, help="epochs of each kind (a2t: its adversarial epochs, >= 1)"
    )
    p.add_argument(
        "--checkpoints", type=int, default=2, help="curve points per epoch (plain, freelb, augment)"
    )
    p.add_argument("--rows", type=int, default=100, help="seeded test rows attacked with each recipe")
    p.add_argument("--val-rows", type=int, default=30, help="seeded validation rows of the curve's attacks")
    p.add_argument("--a2t-adv", type=float, default=0.05, help="a2t num_train_adv_examples (fraction)")
    p.add_argument(
        "--a2t-clean-epoch",
        action="store_true",
        help="a2t runs its own clean epoch (default: it continues from plain's final model, whose run is its "
        "clean part, with num_clean_epochs 0)",
    )
    p.add_argument(
        "--train-examples",
        type=int,
        default=3000,
        help="a seeded subset of the training split (default 3000: one epoch = the default ingredients' 94 "
        "steps; 0 = all 6000)",
    )
    p.add_argument("--learning-rate", type=float, default=5e-5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--full",
        action="store_true",
        help="all 6000 training rows, 3 epochs, 200 test rows, 100 validation rows, a2t 0.2 with its own clean "
        "epoch",
    )
    p.add_argument("--out", type=Path, default=RESULTS / "robust_training.json")
    p.add_argument(
        "--resume",
        action="store_true",
        help="keep the kinds already in --out when its settings (rows, data, epochs, seed, ...) equal this run's",
    )
    a = p.parse_args(argv)
    if a.full:
        a.epochs, a.rows, a.val_rows, a.a2t_adv, a.a2t_clean_epoch = 3.0, 200, 100, 0.2, True
        a.train_examples = 0
    return a


def seeded_prefix(n_rows: int, n: int, seed: int) -> list[int]:
    """tasks.attack.seeded_prefix (the attack stage's and the soup's rows), without importing Prefect."""
    import numpy as np

    return [int(i) for i in np.random.default_rng(seed).permutation(n_rows)[: min(n, n_rows)]]


class Bench:
    """The shared pieces: data, attack resources (loaded once), the row sets, the attack runner."""

    def __init__(self, a: argparse.Namespace):
        from robustprune.attacks import fastpaths
        from robustprune.attacks.bert_attack import load_mlm
        from robustprune.attacks.bundle import load_bundle
        from robustprune.attacks.similarity import MeanPooledEncoder
        from robustprune.attacks.tagger import load_tagger_or_none
        from robustprune.config import load_params
        from robustprune.data import load_splits

        fastpaths.install()
        self.a = a
        self.params = load_params(ROOT / "params.yaml")
        self.splits = load_splits(a.data)
        if a.train_examples:  # a seeded subset (the split is already shuffled by prepare; keep its order)
            keep = sorted(seeded_prefix(len(self.splits.train), a.train_examples, a.seed))
            self.splits = dataclasses.replace(self.splits, train=self.splits.train.iloc[keep])
        self.res = load_bundle(a.attack_resources)
        self.encoder = MeanPooledEncoder.from_dir(self.res.encoder_dir)
        self.tagger = load_tagger_or_none(self.res.tagger_dir)
        self.mlm = load_mlm(self.res.mlm_dir)
        self.test_rows = seeded_prefix(len(self.splits.test), a.rows, self.params.attack.seed)
        self.val_rows = seeded_prefix(len(self.splits.validation), a.val_rows, self.params.soup.attack.seed)
        self.max_length = self.params.data.max_length
        self.plain_state: dict | None = (
            None  # plain's final weights: a2t's clean part (unless --a2t-clean-epoch)
        )

    def correct(self, model, tok, split: str) -> list[bool]:  # noqa: ANN001
        """Per-example clean correctness on a whole split."""
        import torch

        from robustprune.metrics import predict_logits

        df = getattr(self.splits, split)
        logits = predict_logits(model, tok, df["text"].tolist(), batch_size=64, max_length=self.max_length)
        return (torch.as_tensor(logits).argmax(-1).numpy() == df["label"].to_numpy()).tolist()

    def robust(self, model, tok, recipe: str, split: str, rows: list[int]) -> dict:  # noqa: ANN001
        """Attack ``rows`` of ``split`` with ``recipe`` (or ``a2t``); per-row robustness (attack failed)."""
        from robustprune.attacks import build_attack
        from robustprune.attacks.metrics import summarize
        from robustprune.attacks.runner import attack_examples
        from robustprune.attacks.wrapper import FastClassifierWrapper

        model.eval()
        df = getattr(self.splits, split)
        examples = [(str(df["text"].iloc[i]), int(df["label"].iloc[i])) for i in rows]
        if recipe == "a2t":
            from robustprune.a2t import GradientClassifierWrapper
            from robustprune.a2t import build_attack as build_a2t

            wrapper = GradientClassifierWrapper(model, tok, max_length=self.max_length)
            attack = build_a2t(wrapper, self.res, tagger=self.tagger, encoder=self.encoder)
        else:
            wrapper = FastClassifierWrapper(model, tok, max_length=self.max_length, batch_size=32)
            options: dict = {"encoder": self.encoder}
            if recipe == "textfooler":
                options.update(self.params.attack.textfooler.model_dump(), tagger=self.tagger)
            if recipe == "bert-attack":
                options["masked_lm"] = self.mlm
            attack = build_attack(recipe, wrapper, self.res, **options)
        t0 = time.perf_counter()
        results = attack_examples(attack, examples)
        s = summarize(results)
        return {
            "robust": [r.outcome == "failed" for r in results],
            "accuracy_under_attack": s.accuracy_under_attack,
            "attack_success_rate": s.attack_success_rate,
            "avg_queries": s.avg_queries,
            "seconds": time.perf_counter() - t0,
        }

    def checkpoint(self, model, tok, epochs: float, kind: str) -> dict:  # noqa: ANN001
        """One curve point: validation accuracy, TextFooler and A2T robustness on the validation rows."""
        from robustprune.stats import rate, rate_of

        t0 = time.perf_counter()
        model.eval()
        val = self.correct(model, tok, "validation")
        tf = self.robust(model, tok, "textfooler", "validation", self.val_rows)
        proxy = self.robust(model, tok, "a2t", "validation", self.val_rows)
        point = {
            "epochs": epochs,
            "validation_accuracy": rate_of(val).to_dict(),
            "textfooler": rate(sum(tf["robust"]), len(tf["robust"])).to_dict(),
            "a2t": rate(sum(proxy["robust"]), len(proxy["robust"])).to_dict(),
            "textfooler_seconds": tf["seconds"],
            "a2t_seconds": proxy["seconds"],
            "eval_seconds": time.perf_counter() - t0,
        }
        print(
            f"  [{kind} @ {epochs:.2f} ep] val {100 * point['validation_accuracy']['value']:.1f}  "
            f"TF {100 * point['textfooler']['value']:.1f} ({tf['seconds']:.0f}s)  "
            f"A2T {100 * point['a2t']['value']:.1f} ({proxy['seconds']:.0f}s)",
            flush=True,
        )
        return point


def train_kind(b: Bench, kind: str) -> dict:
    """Train one kind with its checkpoints; its final model's clean and attacked outcomes."""
    from robustprune.adversarial import FreeLBSettings
    from robustprune.finetune import FinetuneSettings, finetune
    from robustprune.modeling import load_classifier, load_tokenizer

    a, p = b.a, b.params
    model = load_classifier(
        a.base_model, num_labels=len(b.splits.label_names), head_seed=p.finetune.head_seed
    )
    tok = load_tokenizer(a.base_model)
    texts, labels = b.splits.train["text"].tolist(), b.splits.train["label"].tolist()
    settings = FinetuneSettings(
        learning_rate=a.learning_rate,
        epochs=a.epochs,
        seed=a.seed,
        batch_size=p.finetune.batch_size,
        weight_decay=p.finetune.weight_decay,
        warmup_ratio=p.finetune.warmup_ratio,
        max_length=p.data.max_length,
        adversarial=FreeLBSettings(**FREELB_REFERENCE) if kind == "freelb" else None,
    )
    curve: list[dict] = []
    eval_seconds = [0.0]
    extra: dict = {}

    def at_step(step: int, total: int) -> None:
        points = max(1, math.ceil(a.checkpoints * a.epochs))
        if step == total or step in {round(total * k / points) for k in range(1, points)}:
            t0 = time.perf_counter()
            curve.append(b.checkpoint(model, tok, a.epochs * step / total, kind))
            eval_seconds[0] += time.perf_counter() - t0

    t0 = time.perf_counter()
    if kind == "a2t":
        from robustprune.a2t import A2TSettings, a2t_finetune

        start = 0.0
        if b.plain_state is not None and not a.a2t_clean_epoch:  # the clean part is plain's run
            model.load_state_dict(b.plain_state)
            start = a.epochs

        def at_epoch(epoch: int) -> None:
            t1 = time.perf_counter()
            curve.append(b.checkpoint(model, tok, start + epoch, kind))
            eval_seconds[0] += time.perf_counter() - t1

        clean = 0 if start else 1
        epochs = clean + max(1, math.ceil(a.epochs))
        result = a2t_finetune(
            model,
            tok,
            texts,
            labels,
            dataclasses.replace(settings, epochs=epochs),
            A2TSettings(num_train_adv_examples=a.a2t_adv, num_clean_epochs=clean),
            b.res,
            eval_texts=b.splits.validation["text"].tolist(),
            eval_labels=b.splits.validation["label"].tolist(),
            tagger=b.tagger,
            encoder=b.encoder,
            on_epoch=at_epoch,
        )
        extra = {
            "a2t_epochs": result.epochs,
            "a2t_attack_seconds": result.attack_seconds,
            "epochs": start + epochs,
            "a2t_clean_epochs": clean,
            "continued_from_plain_epochs": start,
        }
    elif kind == "augment":
        from robustprune.augment import Augmenter, AugmentSettings

        augmenter = Augmenter(b.res, AugmentSettings(seed=a.seed), tagger=b.tagger, masked_lm=b.mlm)
        result = finetune(
            model, tok, texts, labels, settings, augmenter=augmenter.bind(texts), callback=at_step, desc=kind
        )
        extra = {"augment": augmenter.stats.as_dict(), "epochs": a.epochs}
    else:
        result = finetune(model, tok, texts, labels, settings, callback=at_step, desc=kind)
        extra = {"epochs": a.epochs}
        if kind == "plain":
            b.plain_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_seconds = time.perf_counter() - t0 - eval_seconds[0]
    model.eval()
    out = {
        "train_seconds": train_seconds,
        "steps": result.steps,
        "seconds_per_step": train_seconds / max(result.steps, 1),
        "final_loss": result.final_loss,
        "curve": curve,
        **extra,
        "test_correct": b.correct(model, tok, "test"),
        "attacks": {},
    }
    for recipe in RECIPES:
        r = b.robust(model, tok, recipe, "test", b.test_rows)
        out["attacks"][recipe] = r
        print(
            f"  [{kind}] {recipe}: {100 * r['accuracy_under_attack']:.1f}% ({r['seconds']:.0f}s)", flush=True
        )
    return out


def summarise(kinds: dict) -> dict:
    """Rates with intervals and paired differences against plain (clean: whole test split; attacks: rows)."""
    from robustprune.stats import paired_difference, rate_of, spearman

    table = {}
    base = kinds.get("plain")
    for kind, k in kinds.items():
        row = {
            "clean": rate_of(k["test_correct"]).to_dict(),
            "train_seconds": k["train_seconds"],
            "seconds_per_step": k["seconds_per_step"],
            "steps": k["steps"],
        }
        if base is not None and kind != "plain":
            row["clean_vs_plain"] = paired_difference(k["test_correct"], base["test_correct"]).to_dict()
        for recipe, r in k["attacks"].items():
            row[recipe] = rate_of(r["robust"]).to_dict()
            if base is not None and kind != "plain" and recipe in base["attacks"]:
                row[f"{recipe}_vs_plain"] = paired_difference(
                    r["robust"], base["attacks"][recipe]["robust"]
                ).to_dict()
        table[kind] = row
    points = [pt for k in kinds.values() for pt in k["curve"]]
    agreement = spearman([pt["textfooler"]["value"] for pt in points], [pt["a2t"]["value"] for pt in points])
    return {"table": table, "proxy_agreement": {"checkpoints": len(points), **agreement.to_dict()}}


def print_table(summary: dict) -> None:
    from robustprune.stats import Rate

    def pct(d: dict) -> str:
        return Rate(**d).pct()

    print(
        f"\n{'kind':<9} {'clean (test)':<20} {'TextFooler':<20} {'BERT-Attack':<20} {'TextBugger':<20} train s  s/step"
    )
    for kind, row in summary["table"].items():
        cells = [pct(row["clean"])] + [pct(row[r]) if r in row else "–" for r in RECIPES]
        print(
            f"{kind:<9} "
            + " ".join(f"{c:<20}" for c in cells)
            + f" {row['train_seconds']:7.0f}  {row['seconds_per_step']:.2f}"
        )
    for kind, row in summary["table"].items():
        diffs = [
            f"{r}: {100 * row[f'{r}_vs_plain']['diff']:+.1f} [{100 * row[f'{r}_vs_plain']['low']:+.1f}, "
            f"{100 * row[f'{r}_vs_plain']['high']:+.1f}]"
            for r in RECIPES
            if f"{r}_vs_plain" in row
        ]
        if diffs:
            print(
                f"{kind} - plain (pts): clean {100 * row['clean_vs_plain']['diff']:+.1f}; " + "; ".join(diffs)
            )
    ag = summary["proxy_agreement"]
    print(
        f"A2T proxy vs TextFooler on validation rows, Spearman over {ag['checkpoints']} checkpoints: "
        f"rho {ag['rho']:.2f}, permutation p {ag['p_value']:.2f} (n {ag['n']})"
    )


def main(argv: list[str] | None = None) -> None:
    from robustprune.checkpoints import write_json

    a = parse(argv)
    set_threads(a.threads)
    b = Bench(a)
    out = {
        "provenance": provenance(argv),
        "settings": {
            **{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(a).items()},
            "freelb": FREELB_REFERENCE,
            "test_rows": b.test_rows,
            "val_rows": b.val_rows,
            "train_examples": len(b.splits.train),
        },
        "kinds": {},
    }
    if a.resume and a.out.exists():
        import json

        old = json.loads(a.out.read_text())
        same = (
            "rows",
            "val_rows",
            "epochs",
            "seed",
            "learning_rate",
            "train_examples",
            "test_rows",
            "val_rows",
        )
        if all(old["settings"].get(k) == out["settings"].get(k) for k in same):
            out["kinds"] = old["kinds"]
            out["provenance"] = {"earlier": old["provenance"], **out["provenance"]}
            print(f"[robust_training] resuming: {', '.join(old['kinds'])} kept from {a.out}", flush=True)
        else:
            raise SystemExit(f"--resume: {a.out} was made with other settings; move it away or drop --resume")
    for kind in a.kinds.split(","):
        if kind in out["kinds"]:
            continue
        print(f"== {kind}", flush=True)
        t0 = time.perf_counter()
        out["kinds"][kind] = train_kind(b, kind)
        out["kinds"][kind]["total_seconds"] = time.perf_counter() - t0
        out["summary"] = summarise(out["kinds"])
        write_json(a.out, out)
    print_table(out["summary"])


if __name__ == "__main__":
    main()

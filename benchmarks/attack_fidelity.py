"""How each offline deviation of our attacks moves accuracy under attack (issue #14).

On the same seeded test examples as the pipeline's attack stage (the first ``--n`` rows of
``np.random.default_rng(seed).permutation`` over the test split, ``tasks.attack.seeded_prefix``), for the dense greedy soup and one pruned model:

* **TextFooler rows**: today's recipe (WordNet lexical part of speech, texts shorter than the
  15-word window not checked: ``pos=lexical, short_text=skip``), each change alone (the contextual
  tagger; the released code's short-text rule; the strict short-text rule) and all together (tagger
  + released, tagger + strict).  Columns: accuracy under attack with its 95% Wilson interval,
  attack success rate, words perturbed, queries, CPU seconds per attacked example (and its ratio to
  today's recipe, same run; wall seconds are in the JSON), the MiniLM cosine of each accepted text to its original, and the paired
  difference of accuracy under attack against today's recipe (exact McNemar interval).
* **Sentence-encoder threshold sweep** (``--sweep``; TextFooler with the chosen defaults on the dense
  soup): accuracy under attack at each angular threshold.
* **BERT-Attack** (paper recipe, ``--bert``): accuracy under attack as run, plus the authors' post-hoc
  filter (they drop adversarial texts whose USE similarity to the original is below a threshold,
  0.4-0.7 on IMDB-like data; textattack instead applies 0.2 during the search): accuracy under
  attack when succeeded texts with MiniLM cosine below each ``--post-filter`` value count as failed.

Per-example outcomes are kept in the JSON (``outcomes``: one letter per example, s/f/k for
succeeded/failed/skipped), so every comparison is paired.

    python benchmarks/attack_fidelity.py                       # 100 examples, soup-greedy + rakp_0.875
    python benchmarks/attack_fidelity.py --n 20 --models soup-greedy --no-sweep --no-bert

Prints tables and writes ``benchmarks/results/attack_fidelity.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import _common  # noqa: F401 - paths and the offline environment, as every benchmark
import numpy as np
import torch
from _common import ROOT, print_markdown

# name -> TextFooler options; "today" is the recipe before issue #14
VARIANTS: dict[str, dict] = {
    "today (lexical POS, short texts skipped)": {"pos": "lexical", "short_text": "skip"},
    "+ contextual POS": {"pos": "tagger", "short_text": "skip"},
    "+ short texts: released rule": {"pos": "lexical", "short_text": "released"},
    "+ short texts: strict": {"pos": "lexical", "short_text": "strict"},
    "all: tagger + released": {"pos": "tagger", "short_text": "released"},
    "all: tagger + strict": {"pos": "tagger", "short_text": "strict"},
}
TODAY = "today (lexical POS, short texts skipped)"
PRUNED_VARIANTS = (TODAY, "all: tagger + released", "all: tagger + strict")
DEFAULT_SWEEP = (0.80, 0.90, 0.95)  # angular; 0.840845 is the default row above
DEFAULT_POST_FILTER = (0.2, 0.4, 0.5, 0.6, 0.7, 0.8)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=100, help="seeded test examples (default 100)")
    p.add_argument("--seed", type=int, default=0, help="example seed (params.yaml attack.seed)")
    p.add_argument(
        "--models",
        nargs="+",
        default=["soup-greedy", "rakp_0.875"],
        help="soup-greedy | <method>_<sparsity> (models/pruned/...) | a directory",
    )
    p.add_argument(
        "--pruned-variants", choices=["all", "key"], default="key", help="TextFooler rows per pruned model"
    )
    p.add_argument(
        "--models-from", type=Path, default=None, help="directory of model copies named like --models"
    )
    p.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    p.add_argument("--resources", type=Path, default=ROOT / "models" / "attack")
    p.add_argument(
        "--tagger", type=Path, default=None, help="spaCy pipeline (default: the bundle's, else resource)"
    )
    p.add_argument(
        "--defaults", default="all: tagger + released", choices=list(VARIANTS), help="sweep options"
    )
    p.add_argument("--sweep", type=float, nargs="*", default=list(DEFAULT_SWEEP))
    p.add_argument("--no-sweep", dest="sweep", action="store_const", const=[])
    p.add_argument("--bert", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--post-filter", type=float, nargs="*", default=list(DEFAULT_POST_FILTER))
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "attack_fidelity.json")
    p.add_argument(
        "--markdown", type=Path, default=None, help="only print the Markdown tables of a results file"
    )
    p.add_argument(
        "--merge",
        type=Path,
        nargs="+",
        default=None,
        help="only combine these result files (e.g. one per model, run in parallel) into --out",
    )
    return p.parse_args(argv)


def merge(paths: list[Path], out: Path) -> dict:
    """One report from several runs of this script (their configs kept per file)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    report = {
        "config": {
            "parts": [{"file": str(p), **part["config"]} for p, part in zip(paths, parts, strict=True)]
        }
    }
    for key in ("textfooler", "sweep", "bert_attack"):
        report[key] = [row for part in parts for row in part.get(key, [])]
    out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    return report


MODELS_FROM: list[Path] = []  # --models-from: directories holding copies named like the models


def model_dir(name: str) -> Path:
    """``soup-greedy`` -> models/soup/greedy; ``rakp_0.875`` -> models/pruned/rakp_0.875; else a path.

    A copy ``<--models-from>/<name>`` comes first (a snapshot that a running pipeline cannot replace).
    """
    for root in MODELS_FROM:
        if (root / name).is_dir():
            return root / name
    if name.startswith("soup-"):
        return ROOT / "models" / "soup" / name.removeprefix("soup-")
    if (ROOT / "models" / "pruned" / name).is_dir():
        return ROOT / "models" / "pruned" / name
    return Path(name)


def seeded_examples(data: Path, n: int, seed: int) -> tuple[list[int], list[tuple[str, int]]]:
    """The attack stage's rows (``tasks.attack.attacked_examples``: the first n of one seeded permutation of
    the test split) and their (text, label)."""
    from robustprune.data import load_splits

    test = load_splits(data).test
    rows = [int(i) for i in np.random.default_rng(seed).permutation(len(test))[:n]]
    return rows, [(str(test["text"].iloc[i]), int(test["label"].iloc[i])) for i in rows]


def tagger_dir(args: argparse.Namespace, resources) -> Path | None:  # noqa: ANN001 - AttackResources
    """``--tagger``, else the bundle's tagger/, else the spacy_en_sm resource extracted under .cache."""
    if args.tagger is not None:
        return args.tagger
    if resources.tagger_dir is not None:
        return resources.tagger_dir
    from robustprune import resources as registry

    registry.download("spacy_en_sm")
    return registry.extract("spacy_en_sm", ROOT / ".cache" / "attack_fidelity" / "spacy_en_sm")


class Scorer:
    """MiniLM cosine between an original and its perturbed text (its own encoder: no shared counters)."""

    def __init__(self, encoder_dir: Path):
        from robustprune.attacks.similarity import MeanPooledEncoder

        self.encoder = MeanPooledEncoder.from_dir(encoder_dir)

    def cosines(self, pairs: list[tuple[str, str]]) -> list[float]:
        if not pairs:
            return []
        emb = self.encoder.encode([t for pair in pairs for t in pair])
        a, b = emb[0::2], emb[1::2]
        return torch.nn.functional.cosine_similarity(a, b, dim=1).tolist()


def summarise(results, scorer: Scorer, wall: float, cpu: float, extra: dict) -> dict:  # noqa: ANN001
    """One row: textattack's metrics, Wilson interval, cost, similarity of accepted texts.

    Cost per attacked example (not skipped: the clean text was classified correctly) in wall seconds and
    in CPU seconds of the process; on a shared machine the CPU seconds are the steadier of the two.
    """
    from robustprune.attacks.metrics import summarize
    from robustprune.stats import rate

    s = summarize(results)
    attacked = [r for r in results if r.outcome != "skipped"]
    cos = scorer.cosines([(r.original_text, r.perturbed_text) for r in results if r.outcome == "succeeded"])
    under = rate(s.num_failed, s.num_examples)
    return {
        **extra,
        "summary": s.to_dict(),
        "accuracy_under_attack": under.to_dict(),
        "attack_success_rate": s.attack_success_rate,
        "avg_words_perturbed": s.avg_words_perturbed,
        "avg_queries": s.avg_queries,
        "wall_seconds": wall,
        "seconds_per_attacked": sum(r.seconds for r in attacked) / len(attacked) if attacked else math.nan,
        "cpu_seconds": cpu,
        "cpu_seconds_per_attacked": cpu / len(attacked) if attacked else math.nan,
        "seconds_per_query": sum(r.seconds for r in attacked) / max(sum(r.num_queries for r in attacked), 1),
        "accepted_cosine_mean": float(np.mean(cos)) if cos else math.nan,
        "accepted_cosine_min": float(np.min(cos)) if cos else math.nan,
        "accepted_cosines": cos,
        "outcomes": "".join({"succeeded": "s", "failed": "f", "skipped": "k"}[r.outcome] for r in results),
        "queries": [r.num_queries for r in results],
        "perturbed": [r.perturbed_text if r.outcome == "succeeded" else None for r in results],
    }


def run(attack, examples) -> tuple[list, float, float]:  # noqa: ANN001
    """Results, wall seconds and CPU seconds of this process (torch runs on ``--threads`` threads)."""
    from robustprune.attacks.runner import attack_examples

    t0, c0 = time.perf_counter(), time.process_time()
    results = attack_examples(attack, examples, progress=True)
    return results, time.perf_counter() - t0, time.process_time() - c0


def paired_vs(row: dict, base: dict) -> dict:
    """Accuracy under attack of ``row`` minus ``base`` on the same examples (failed = still right)."""
    from robustprune.stats import paired_difference

    a = [o == "f" for o in row["outcomes"]]
    b = [o == "f" for o in base["outcomes"]]
    return paired_difference(a, b).to_dict()


def post_filter(row: dict, thresholds: list[float]) -> list[dict]:
    """Accuracy under attack when succeeded texts below each cosine threshold count as failed (BERT-Attack's
    authors' post-hoc USE filter, with MiniLM)."""
    from robustprune.stats import rate

    out = []
    n = row["summary"]["num_examples"]  # textattack's N: misclassified (skipped) examples included
    for t in thresholds:
        cos = iter(row["accepted_cosines"])
        failed = 0
        for o in row["outcomes"]:
            if o == "f" or (o == "s" and next(cos) < t):
                failed += 1
        out.append({"threshold": t, "accuracy_under_attack": rate(failed, n).to_dict()})
    return out


def pct(r: dict) -> str:
    return f"{100 * r['value']:5.1f} [{100 * r['low']:4.1f}, {100 * r['high']:4.1f}]"


def table(rows: list[dict]) -> str:
    head = (
        f"{'model':<14} {'variant':<42} {'acc under attack [95%]':>23} {'succ%':>6} {'words%':>6} "
        f"{'queries':>7} {'cpu/att':>7} {'x today':>7} {'cos':>5} {'vs today (pts)':>22}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        d = r.get("vs_today")
        diff = f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f},{100 * d['high']:+.1f}]" if d else "-"
        lines.append(
            f"{r['model']:<14} {r['variant']:<42} {pct(r['accuracy_under_attack']):>23} "
            f"{100 * r['attack_success_rate']:6.1f} {100 * r['avg_words_perturbed']:6.1f} {r['avg_queries']:7.1f} "
            f"{r['cpu_seconds_per_attacked']:7.2f} {r.get('cost_ratio', float('nan')):7.2f} "
            f"{r['accepted_cosine_mean']:5.3f} {diff:>22}"
        )
    return "\n".join(lines)


def markdown(report: dict) -> str:
    """The tables of docs/attacks.md from a results file (``--markdown``)."""

    def pct_md(r: dict) -> str:
        return f"{100 * r['value']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"

    def diff_md(d: dict | None) -> str:
        if not d:
            return "–"
        return f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] ({d['verdict']})"

    out = [
        "| model | TextFooler variant | acc. under attack % [95%] | success % | words perturbed % | queries "
        "| CPU s / attacked ex. (× today) | MiniLM cos of accepted | vs today, pts [95%] |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["textfooler"] + report["sweep"]:
        out.append(
            f"| {r['model']} | {r['variant']} | {pct_md(r['accuracy_under_attack'])} | "
            f"{100 * r['attack_success_rate']:.1f} | {100 * r['avg_words_perturbed']:.1f} | {r['avg_queries']:.1f} | "
            f"{r['cpu_seconds_per_attacked']:.2f} ({r.get('cost_ratio', float('nan')):.2f}) | "
            f"{r['accepted_cosine_mean']:.3f} | {diff_md(r.get('vs_today'))} |"
        )
    if report.get("bert_attack"):
        out += [
            "",
            "| model | BERT-Attack | acc. under attack % [95%] | success % | words perturbed % | queries "
            "| MiniLM cos of accepted |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in report["bert_attack"]:
            out.append(
                f"| {r['model']} | as run (cosine >= 0.2 during the search) | {pct_md(r['accuracy_under_attack'])} | "
                f"{100 * r['attack_success_rate']:.1f} | {100 * r['avg_words_perturbed']:.1f} | {r['avg_queries']:.1f} | "
                f"{r['accepted_cosine_mean']:.3f} |"
            )
            for pf in r.get("post_filter", []):
                out.append(
                    f"| {r['model']} | post-hoc: accepted text kept if cosine >= {pf['threshold']:.2f} | "
                    f"{pct_md(pf['accuracy_under_attack'])} | | | | |"
                )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if print_markdown(args.markdown, markdown):
        return 0
    if args.merge:
        report = merge(args.merge, args.out)
        print(table(report["textfooler"] + report["sweep"] + report["bert_attack"]))
        print(f"wrote {args.out}")
        return 0
    torch.set_num_threads(args.threads)
    if args.models_from is not None:
        MODELS_FROM.append(args.models_from)
    from robustprune.attacks import build_attack
    from robustprune.attacks.bundle import load_bundle
    from robustprune.attacks.components import pos_label
    from robustprune.attacks.similarity import MeanPooledEncoder
    from robustprune.attacks.tagger import ContextTagger, load_tagger
    from robustprune.attacks.textattack_env import import_textattack
    from robustprune.attacks.wrapper import FastClassifierWrapper
    from robustprune.modeling import load_classifier, load_tokenizer
    from robustprune.resources import sha256_file

    import_textattack()
    resources = load_bundle(args.resources)
    tdir = tagger_dir(args, resources)
    base_tagger = load_tagger(tdir)
    shared_encoder = MeanPooledEncoder.from_dir(resources.encoder_dir)
    scorer = Scorer(resources.encoder_dir)
    rows_idx, examples = seeded_examples(args.data, args.n, args.seed)
    warm_up = seeded_examples(args.data, args.n + 1, args.seed)[1][-1:]  # the next row: not attacked below
    words = [len(t.split()) for t, _ in examples]
    load0 = os.getloadavg()
    report: dict = {
        "config": {
            "n": len(examples),
            "seed": args.seed,
            "test_rows": rows_idx,
            "short_texts": sum(w < 15 for w in words),
            "median_words": float(np.median(words)),
            "models": args.models,
            "model_dirs": {m: str(model_dir(m)) for m in args.models},
            "model_sha256": {m: sha256_file(model_dir(m) / "model.safetensors")[:16] for m in args.models},
            "resources": str(args.resources),
            "tagger": base_tagger.name,
            "tagger_dir": str(tdir),
            "threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": load0,
        },
        "textfooler": [],
        "sweep": [],
        "bert_attack": [],
    }

    def fresh():  # noqa: ANN202 - new caches over the shared models, so no run profits from another's
        return (
            MeanPooledEncoder(shared_encoder.model, shared_encoder.tokenizer),
            ContextTagger(base_tagger.backend, name=base_tagger.name),
        )

    def attacked(name: str, label: str, attack, extra: Callable[[], dict]) -> dict:  # noqa: ANN001
        """Run ``attack`` on the examples and summarise it; ``extra()`` (read after the run) adds the row's
        labels and counters after its model name."""
        print(f"{name} / {label}", flush=True)
        results, wall, cpu = run(attack, examples)
        return summarise(results, scorer, wall, cpu, {"model": name, **extra()})

    for m_i, name in enumerate(args.models):
        path = model_dir(name)
        net = load_classifier(path).eval()
        wrapper = FastClassifierWrapper(
            net, load_tokenizer(path), max_length=args.max_length, batch_size=args.batch_size
        )
        dense = name.startswith("soup-") or args.pruned_variants == "all"
        variants = list(VARIANTS) if dense else list(PRUNED_VARIANTS)
        encoder, tagger = fresh()  # untimed warm-up: first forwards of each shape, lazy allocations
        run(build_attack("textfooler", wrapper, resources, encoder=encoder, tagger=tagger), warm_up)
        wrapper.stats.reset()
        model_rows = {}
        for variant in variants:
            encoder, tagger = fresh()
            attack = build_attack(
                "textfooler", wrapper, resources, encoder=encoder, tagger=tagger, **VARIANTS[variant]
            )
            row = attacked(
                name,
                f"textfooler / {variant}",
                attack,
                lambda: {  # read after the run (its counts), within this iteration: B023 does not apply
                    "recipe": "textfooler",
                    "variant": variant,  # noqa: B023
                    "options": VARIANTS[variant],  # noqa: B023
                    "pos_tagger": pos_label(attack),  # noqa: B023
                    "tagger_stats": vars(tagger.stats).copy(),  # noqa: B023
                    "encoder_texts": encoder.stats.texts,  # noqa: B023
                    "victim_texts": wrapper.stats.texts,  # noqa: B023
                },
            )
            wrapper.stats.reset()
            model_rows[variant] = row
            if variant != TODAY:
                base = model_rows[TODAY]
                row["vs_today"] = paired_vs(row, base)
                row["cost_ratio"] = row["cpu_seconds_per_attacked"] / base["cpu_seconds_per_attacked"]
                row["wall_ratio"] = row["seconds_per_attacked"] / base["seconds_per_attacked"]
            else:
                row["cost_ratio"] = 1.0
            report["textfooler"].append(row)
            print(table([row]), flush=True)
        if m_i == 0:
            for t in args.sweep:
                encoder, tagger = fresh()
                options = {**VARIANTS[args.defaults], "sim_threshold": t}
                attack = build_attack(
                    "textfooler", wrapper, resources, encoder=encoder, tagger=tagger, **options
                )
                row = attacked(
                    name,
                    f"textfooler / threshold {t}",
                    attack,
                    lambda: {"recipe": "textfooler", "options": options},  # noqa: B023
                )
                row["variant"] = f"{args.defaults} @ {t}"
                row["vs_today"] = paired_vs(row, model_rows[TODAY])
                row["cost_ratio"] = (
                    row["cpu_seconds_per_attacked"] / model_rows[TODAY]["cpu_seconds_per_attacked"]
                )
                report["sweep"].append(row)
                print(table([row]), flush=True)
        if args.bert:
            from robustprune.attacks.bert_attack import load_mlm

            encoder, _ = fresh()
            attack = build_attack(
                "bert-attack", wrapper, resources, encoder=encoder, masked_lm=load_mlm(resources.mlm_dir)
            )
            row = attacked(
                name, "bert-attack", attack, lambda: {"recipe": "bert-attack", "variant": "paper recipe"}
            )
            row["post_filter"] = post_filter(row, args.post_filter)
            report["bert_attack"].append(row)
            print(table([row]), flush=True)
            for pf in row["post_filter"]:
                print(f"    post-hoc cosine >= {pf['threshold']:.2f}: {pct(pf['accuracy_under_attack'])}")
        report["config"]["loadavg_end"] = os.getloadavg()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(
            json.dumps(report, indent=1, default=float) + "\n"
        )  # after each model: partial results
    print()
    print(table(report["textfooler"] + report["sweep"] + report["bert_attack"]))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

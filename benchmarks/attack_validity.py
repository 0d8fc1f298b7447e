"""Adversarial examples that keep their meaning (issue #28): how many successful attacks change the label.

Four parts, each a flag; each writes its own key of ``benchmarks/results/attack_validity.json`` (the other keys
are kept, so the parts can run at different times):

* ``--csv`` (default): the validity audit (:mod:`robustprune.attacks.validity`) of every successful attack in a
  run's per-example CSVs (default the committed evidence run, ``reports/evidence/attacks/<model>/<recipe>.csv``):
  per model x recipe the successes, the share judged label-changing by each check (VADER word flip, AFINN word
  flip, WordNet antonym, VADER compound flip) and by the rule (any of them), with 95% Wilson intervals, accuracy
  under attack vs under valid attacks (label-changing successes count as failed; by the rule and by VADER alone,
  the issue's figure), and examples. The issue's own figures are printed beside ours.
* ``--constraint``: the attack stage's seeded test rows attacked on one model (default the soup) with each recipe
  as it is, with the polarity/antonym constraint on (``attack.validity.constraint``), and TextFooler with Morris
  et al.'s adjusted thresholds (``attack.textfooler.adjusted``); per run the audit's shares, accuracy under
  attack and the CPU seconds per attacked example as a ratio to the unconstrained run of the same recipe (same
  process, fresh caches, the order of runs alternated).
* ``--mlm``: BERT-Attack's candidates from the masked-LM stand-in for a seeded sample of test words (each word
  masked in its own sentence, top ``--mlm-k`` as the recipe proposes them): how often they are polar opposites or
  antonyms of the masked word; the counter-fitted vectors' neighbours of the same words beside them.
* ``--vectors``: each word's top-k neighbours in plain GloVe (same vocabulary) and in the counter-fitted vectors
  of the bundle: the share that are antonyms or opposite-polarity words (all words; polar words only).

    python benchmarks/attack_validity.py                                   # the CSV audit (seconds)
    python benchmarks/attack_validity.py --csv-dir reports/attacks         # another run's CSVs
    python benchmarks/attack_validity.py --no-csv --constraint --model /path/soup --resources /path/attack
    python benchmarks/attack_validity.py --no-csv --mlm --vectors --resources /path/attack

Prints tables and writes ``benchmarks/results/attack_validity.json``.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import time
from pathlib import Path

import _common
import numpy as np
from _common import RESOURCES, ROOT, print_markdown

RESULTS = ROOT / "benchmarks" / "results" / "attack_validity.json"
RECIPES = ("textfooler", "bert-attack", "textbugger")
TITLES = {"textfooler": "TextFooler", "bert-attack": "BERT-Attack", "textbugger": "TextBugger"}
CHECK_TITLES = {
    "vader": "VADER",
    "afinn": "AFINN",
    "wordnet": "WordNet",
    "compound": "compound",
    "rule": "any",
}
# issue #28's table and accuracies (VADER word flips only), to check ours against
ISSUE = {
    ("soup-greedy", "textfooler"): {"successes": 366, "vader": 26, "acc": 3.8, "valid_acc": 9.0},
    ("soup-greedy", "bert-attack"): {"successes": 342, "vader": 101, "acc": 1.2, "valid_acc": 21.4},
    ("soup-greedy", "textbugger"): {"successes": 97, "vader": 4},
    ("rakp_0.875", "bert-attack"): {"successes": 317, "vader": 40, "acc": 0.8, "valid_acc": 8.8},
    ("sparsegpt_0.875", "bert-attack"): {"successes": 200, "vader": 86},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--csv", action=argparse.BooleanOptionalAction, default=True, help="audit a run's CSVs")
    p.add_argument("--csv-dir", type=Path, default=ROOT / "reports" / "evidence" / "attacks")
    p.add_argument("--constraint", action="store_true", help="attack with the constraint on and off")
    p.add_argument("--mlm", action="store_true", help="audit the masked-LM stand-in's candidates")
    p.add_argument("--vectors", action="store_true", help="audit plain vs counter-fitted neighbours")
    p.add_argument("--resources", type=Path, default=ROOT / "models" / "attack", help="the attack bundle")
    p.add_argument(
        "--model", type=Path, default=ROOT / "models" / "soup" / "greedy", help="--constraint victim"
    )
    p.add_argument("--model-name", default="soup-greedy")
    p.add_argument("--data", type=Path, default=ROOT / "data" / "prepared")
    p.add_argument("--params", type=Path, default=ROOT / "params.yaml", help="attack.validity, attack.seed")
    p.add_argument("--n", type=int, default=100, help="--constraint: seeded test rows (the attack stage's)")
    p.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=RECIPES)
    p.add_argument("--no-adjusted", dest="adjusted", action="store_false", help="skip adjusted TextFooler")
    p.add_argument("--mlm-words", type=int, default=400, help="--mlm: sampled test words")
    p.add_argument("--mlm-k", type=int, default=48, help="--mlm: candidates per word (BERT-Attack's K)")
    p.add_argument("--k", type=int, nargs="+", default=[5, 50], help="--vectors: neighbours per word")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--examples", type=int, default=3)
    p.add_argument("--out", type=Path, default=RESULTS)
    p.add_argument(
        "--markdown", type=Path, default=None, help="only print the docs' tables of a results file"
    )
    return p.parse_args(argv)


# ------------------------------------------------------------------------------------------ helpers


def load_rule(params: Path):  # noqa: ANN201 - (ValidityRule, AttackValidityConfig, Params)
    from robustprune.attacks.validity import ValidityRule
    from robustprune.config import load_params

    p = load_params(params)
    v = p.attack.validity
    return ValidityRule(v.vader_threshold, v.afinn_threshold, v.compound_threshold, tuple(v.rule)), v, p


def polarity(resources: Path):  # noqa: ANN201 - Polarity
    """The bundle's polarity/ lexicons, else built from the registered resources (under .cache/resources)."""
    from robustprune.attacks.validity import ANTONYMS_FILE, load_polarity
    from tasks.attack_resources import polarity_lexicons
    from tasks.common import Layout

    if (resources / "polarity" / ANTONYMS_FILE).is_file():
        return load_polarity(resources / "polarity")
    return polarity_lexicons(Layout(ROOT))


def pct(r: dict) -> str:
    return "–" if not r["n"] else f"{100 * r['value']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def share_cell(r: dict) -> str:
    return "–" if not r["n"] else f"{r['k']} ({pct(r)})"


def write_part(out: Path, key: str, part: dict) -> None:
    """Put ``part`` under ``key`` of the results file, keeping its other keys."""
    report = json.loads(out.read_text()) if out.is_file() else {}
    report[key] = {"provenance": _common.provenance(), **part}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, sort_keys=True, default=float, ensure_ascii=False) + "\n")


def read_csvs(directory: Path) -> tuple[dict, list[dict]]:
    """(model, recipe) -> row -> outcome (``no words`` as the report reads it), and every record."""
    index = directory / "index.json"
    pairs = json.loads(index.read_text()) if index.is_file() else []
    if not pairs:
        pairs = [[p.parent.name, p.stem] for p in sorted(directory.glob("*/*.csv"))]
    outcomes, records = {}, []
    for model, recipe in pairs:
        with (directory / model / f"{recipe}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        outcomes[(model, recipe)] = {
            int(r["test_row"]): "no words" if r.get("original_prediction", "") == "" else r["outcome"]
            for r in rows
        }
        records += [{**r, "model": model, "recipe": recipe} for r in rows]
    return outcomes, records


def audit_table(rows: list[dict]) -> str:
    head = (
        f"{'model':<16} {'recipe':<11} {'rows':>4} {'succ':>4} "
        + " ".join(f"{CHECK_TITLES[c]:>20}" for c in ("vader", "afinn", "wordnet", "compound", "rule"))
        + f" {'acc under attack':>20} {'acc valid (any)':>20} {'acc valid (VADER)':>20}"
    )
    lines = [head, "-" * len(head)]
    for a in rows:
        lines.append(
            f"{a['model']:<16} {TITLES.get(a['recipe'], a['recipe']):<11} {a['rows']:>4} {a['successes']:>4} "
            + " ".join(
                f"{share_cell(a['shares'][c]):>20}" for c in ("vader", "afinn", "wordnet", "compound", "rule")
            )
            + f" {pct(a['accuracy_under_attack']):>20} {pct(a['accuracy_under_valid_attack']):>20}"
            f" {pct(a['accuracy_under_valid_attack_by_check']['vader']):>20}"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ --csv


def csv_audit(args: argparse.Namespace) -> dict:
    from robustprune.attacks.validity import audit_all, judge_records

    rule, _, _ = load_rule(args.params)
    outcomes, records = read_csvs(args.csv_dir)
    t0 = time.perf_counter()
    flags = judge_records(records, polarity(args.resources), rule)
    audits = audit_all(outcomes, flags, rule, args.examples)
    rows = [{**a.to_dict(), "rows": len(outcomes[(a.model, a.recipe)])} for a in audits]
    print(audit_table(rows))
    print()
    print("Examples (first flagged successes in the attack's order):")
    for a in rows:
        ex = "; ".join(
            f"{CHECK_TITLES[c]}: {', '.join(a['examples'][c])}"
            for c in ("vader", "wordnet")
            if a["examples"][c]
        )
        if ex:
            print(f"  {a['model']} / {TITLES[a['recipe']]}: {ex}")
    check = []
    by = {(a["model"], a["recipe"]): a for a in rows}
    print()
    print(
        f"{'issue #28 vs ours':<30} {'successes':>15} {'VADER flips':>15} {'acc %':>13} {'valid acc % (VADER)':>20}"
    )
    for key, want in ISSUE.items():
        a = by.get(key)
        if a is None:
            continue
        got = {
            "successes": a["successes"],
            "vader": a["shares"]["vader"]["k"],
            "acc": round(100 * a["accuracy_under_attack"]["value"], 1),
            "valid_acc": round(100 * a["accuracy_under_valid_attack_by_check"]["vader"]["value"], 1),
        }
        check.append({"model": key[0], "recipe": key[1], "issue": want, "ours": got})
        print(
            f"{key[0] + ' / ' + TITLES[key[1]]:<30} {want['successes']:>6} / {got['successes']:<6} "
            f"{want['vader']:>6} / {got['vader']:<6} {want.get('acc', '–')!s:>5} / {got['acc']:<5} "
            f"{want.get('valid_acc', '–')!s:>8} / {got['valid_acc']:<8}"
        )
    comparisons = paired_verdicts(args.csv_dir.parent, outcomes, flags)
    return {
        "comparisons": comparisons,
        "source": str(args.csv_dir.relative_to(ROOT) if args.csv_dir.is_relative_to(ROOT) else args.csv_dir),
        "rule": list(rule.rule),
        "thresholds": {
            "vader": rule.vader_threshold,
            "afinn": rule.afinn_threshold,
            "compound": rule.compound_threshold,
        },
        "seconds": time.perf_counter() - t0,
        "rows": rows,
        "issue_check": check,
    }


def paired_verdicts(run_dir: Path, outcomes: dict, flags: dict) -> list[dict]:
    """The report's paired comparisons (robustprune.verdicts.compare) under each recipe and under its valid
    attacks, from the run's eval.json (models, reference) and metrics.json (best ingredient)."""
    from robustprune.attacks.validity import valid_attack_outcomes
    from robustprune.verdicts import compare

    if not (run_dir / "eval.json").is_file():
        return []
    evaluation = json.loads((run_dir / "eval.json").read_text())
    metrics = (
        json.loads((run_dir / "metrics.json").read_text()) if (run_dir / "metrics.json").is_file() else {}
    )
    recipes = list(dict.fromkeys(r for _, r in outcomes))
    names = [*recipes, *(f"valid:{r}" for r in recipes)]
    comps = compare(
        evaluation["models"],
        {**outcomes, **valid_attack_outcomes(outcomes, flags)},
        names,
        evaluation["reference"],
        metrics.get("soup", {}).get("best_ingredient"),
    )
    print()
    print(f"{'A':<16} {'B':<16} {'metric':<24} {'A %':>6} {'B %':>6} {'A - B pts [95%]':>22}  verdict")
    for c in comps:
        d = c.diff
        print(
            f"{c.a:<16} {c.b:<16} {c.metric:<24} {100 * c.a_rate.value:6.1f} {100 * c.b_rate.value:6.1f} "
            f"{f'{100 * d.diff:+.1f} [{100 * d.low:+.1f}, {100 * d.high:+.1f}]':>22}  {d.verdict}"
        )
    return [c.to_dict() for c in comps]


# ------------------------------------------------------------------------------------------ --constraint


def _records(results, rows: list[int], model: str, recipe: str) -> list[dict]:  # noqa: ANN001
    return [
        {
            "test_row": row,
            "outcome": "no words" if r.reason == "no words" else r.outcome,
            "original_text": r.original_text,
            "perturbed_text": r.perturbed_text,
            "model": model,
            "recipe": recipe,
        }
        for row, r in zip(rows, results, strict=True)
    ]


def constraint_runs(args: argparse.Namespace) -> dict:
    """Each recipe as run, with the polarity constraint, and TextFooler adjusted; audited and timed."""
    from dataclasses import replace

    import torch

    from robustprune.attacks import build_attack, fastpaths
    from robustprune.attacks.bert_attack import load_mlm
    from robustprune.attacks.bundle import load_bundle
    from robustprune.attacks.runner import attack_examples
    from robustprune.attacks.similarity import MeanPooledEncoder
    from robustprune.attacks.tagger import ContextTagger, load_tagger_or_none
    from robustprune.attacks.textattack_env import import_textattack
    from robustprune.attacks.validity import audit, judge_records
    from robustprune.attacks.wrapper import FastClassifierWrapper
    from robustprune.data import load_splits
    from robustprune.modeling import load_classifier, load_tokenizer
    from robustprune.resources import sha256_file
    from robustprune.stats import paired_difference
    from tasks.attack import seeded_prefix

    torch.set_num_threads(args.threads)
    import_textattack()
    fastpaths.install()  # as the attack stage
    rule, vcfg, params = load_rule(args.params)
    res = load_bundle(args.resources)
    pol = polarity(args.resources)
    res = replace(res, polarity=pol)
    test = load_splits(args.data).test
    rows = seeded_prefix(len(test), args.n + 1, params.attack.seed)
    warm, rows = rows[-1:], rows[: args.n]
    examples = [(str(test["text"].iloc[i]), int(test["label"].iloc[i])) for i in rows]
    net = load_classifier(args.model).eval()
    wrapper = FastClassifierWrapper(
        net,
        load_tokenizer(args.model),
        max_length=params.data.max_length,
        batch_size=params.attack.batch_size,
    )
    shared = MeanPooledEncoder.from_dir(res.encoder_dir)
    base_tagger = load_tagger_or_none(res.tagger_dir)
    masked_lm = load_mlm(res.mlm_dir) if "bert-attack" in args.recipes else None
    constraint = {
        "checks": list(vcfg.constraint_checks),
        "vader_threshold": vcfg.vader_threshold,
        "afinn_threshold": vcfg.afinn_threshold,
    }
    out: dict = {
        "config": {
            "model": args.model_name,
            "model_dir": str(args.model),
            "model_sha256": sha256_file(args.model / "model.safetensors")[:16],
            "resources": str(args.resources),
            "polarity_from": "bundle" if (args.resources / "polarity").is_dir() else "resources",
            "n": len(rows),
            "seed": params.attack.seed,
            "test_rows": rows,
            "constraint": constraint,
            "threads": args.threads,
            "loadavg_start": os.getloadavg(),
        },
        "runs": [],
    }

    def options(recipe: str, variant: str) -> dict:
        o = params.attack.textfooler.model_dump() if recipe == "textfooler" else {}
        o.pop("adjusted", None)
        if recipe == "textfooler":
            o["tagger"] = ContextTagger(base_tagger.backend, name=base_tagger.name) if base_tagger else None
        if recipe == "bert-attack":
            o["masked_lm"] = masked_lm
        if "constraint" in variant:
            o["polarity_constraint"] = constraint
        if "adjusted" in variant:
            o["adjusted"] = True
        return o

    variants = {r: ["as run", "+ polarity constraint"] for r in args.recipes}
    if "textfooler" in variants and args.adjusted:
        variants["textfooler"] += ["adjusted (Morris et al.)", "adjusted + polarity constraint"]
    header = (
        f"{'recipe':<11} {'variant':<32} {'acc under attack':>20} {'succ':>4} {'VADER':>14} {'any':>14} "
        f"{'cpu/att':>7} {'x run':>6} {'queries':>7}"
    )
    print(header, flush=True)
    for recipe, names in variants.items():
        encoder = MeanPooledEncoder(shared.model, shared.tokenizer)
        attack = build_attack(recipe, wrapper, res, encoder=encoder, **options(recipe, "as run"))
        attack_examples(attack, [(str(test["text"].iloc[i]), int(test["label"].iloc[i])) for i in warm])
        base = None
        for variant in names:
            encoder = MeanPooledEncoder(shared.model, shared.tokenizer)  # fresh caches for every run
            attack = build_attack(recipe, wrapper, res, encoder=encoder, **options(recipe, variant))
            wrapper.stats.reset()
            t0, c0 = time.perf_counter(), time.process_time()
            results = attack_examples(attack, examples, progress=False)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            records = _records(results, rows, args.model_name, recipe)
            outcomes = {r["test_row"]: r["outcome"] for r in records}
            flags = judge_records(records, pol, rule).get((args.model_name, recipe), {})
            a = audit(args.model_name, recipe, outcomes, flags, rule, args.examples).to_dict()
            attacked = [r for r in results if r.outcome != "skipped"]
            run = {
                "recipe": recipe,
                "variant": variant,
                **a,
                "attack_success_rate": a["successes"] / max(sum(r.outcome != "skipped" for r in results), 1),
                "avg_queries": float(np.mean([r.num_queries for r in attacked])) if attacked else math.nan,
                "wall_seconds": wall,
                "cpu_seconds": cpu,
                "cpu_seconds_per_attacked": cpu / len(attacked) if attacked else math.nan,
                "victim_texts": wrapper.stats.texts,
                "encoder_texts": encoder.stats.texts,
                "outcomes": "".join(
                    {"succeeded": "s", "failed": "f", "skipped": "k"}.get(r["outcome"], "n") for r in records
                ),
                "perturbed": [r.perturbed_text if r.outcome == "succeeded" else None for r in results],
            }
            if base is None:
                base = run
                run["cost_ratio"] = 1.0
            else:
                run["cost_ratio"] = run["cpu_seconds_per_attacked"] / base["cpu_seconds_per_attacked"]
                run["wall_ratio"] = run["wall_seconds"] / base["wall_seconds"]
                keep = [
                    i
                    for i, (x, y) in enumerate(zip(run["outcomes"], base["outcomes"], strict=True))
                    if "n" not in (x, y)
                ]
                run["vs_as_run"] = paired_difference(
                    [run["outcomes"][i] == "f" for i in keep], [base["outcomes"][i] == "f" for i in keep]
                ).to_dict()
            out["runs"].append(run)
            print(
                f"{TITLES[recipe]:<11} {variant:<32} {pct(run['accuracy_under_attack']):>20} {run['successes']:>4} "
                f"{share_cell(run['shares']['vader']):>14} {share_cell(run['shares']['rule']):>14} "
                f"{run['cpu_seconds_per_attacked']:7.2f} {run['cost_ratio']:6.2f} {run['avg_queries']:7.1f}",
                flush=True,
            )
    out["config"]["loadavg_end"] = os.getloadavg()
    return out


# ------------------------------------------------------------------------------------------ --mlm


def _flag_counts(word: str, candidates: list[str], pol, rule) -> dict[str, int]:  # noqa: ANN001
    from robustprune.attacks.validity import WORD_CHECKS, word_checks

    counts = dict.fromkeys((*WORD_CHECKS, "any"), 0)
    for c in candidates:
        hits = word_checks(word, c, pol, rule)
        for k, hit in hits.items():
            counts[k] += hit
        counts["any"] += any(hits.values())
    return counts


def _polar(word: str, pol, rule) -> bool:  # noqa: ANN001
    from robustprune.attacks.validity import lemmas

    w = word.lower()
    return (
        abs(pol.vader.get(w, 0.0)) >= rule.vader_threshold
        or abs(pol.afinn.get(w, 0)) >= rule.afinn_threshold
        or any(pol.wordnet.antonyms.get(x) for x in lemmas(w, pol.wordnet))
    )


def mlm_audit(args: argparse.Namespace) -> dict:
    """The masked-LM stand-in's candidates (and the counter-fitted neighbours) for sampled test words."""
    import random

    import torch

    from robustprune.attacks.bert_attack import BertAttackMaskedLMSwap, load_mlm
    from robustprune.attacks.bundle import load_bundle
    from robustprune.attacks.textattack_env import import_textattack
    from robustprune.data import load_splits

    torch.set_num_threads(args.threads)
    ta = import_textattack()
    rule, _, params = load_rule(args.params)
    res = load_bundle(args.resources)
    pol = polarity(args.resources)
    mlm, tok = load_mlm(res.mlm_dir)
    swap = BertAttackMaskedLMSwap(mlm, tok, max_candidates=args.mlm_k, max_length=params.data.max_length)
    index = res.vectors.index()
    test = load_splits(args.data).test
    positions = []
    for t, text in enumerate(test["text"].astype(str)):
        for i, w in enumerate(ta.shared.utils.words_from_text(text)):
            if w.lower() not in res.stopwords and w.isalpha():
                positions.append((t, i, w))
    rng = random.Random(params.attack.seed)
    polar_positions = [p for p in positions if _polar(p[2], pol, rule)]
    samples = {
        "content words": rng.sample(positions, min(args.mlm_words, len(positions))),
        "polar words": rng.sample(polar_positions, min(args.mlm_words, len(polar_positions))),
    }
    out: dict = {
        "config": {
            "k": args.mlm_k,
            "words": args.mlm_words,
            "mlm_dir": str(res.mlm_dir),
            "test_content_words": len(positions),
            "test_polar_words": len(polar_positions),
        },
        "samples": {},
    }
    for name, sample in samples.items():
        mlm_totals = dict.fromkeys(("vader", "afinn", "wordnet", "any"), 0)
        vec_totals = dict.fromkeys(("vader", "afinn", "wordnet", "any"), 0)
        mlm_words_hit = vec_words_hit = mlm_n = vec_n = vec_words = 0
        examples: list[str] = []
        for t, i, w in sample:
            text = ta.shared.AttackedText(str(test["text"].iloc[t]))
            logits = swap._sentence_logits(text.text)
            cands = [c.strip("Ġ") for c in swap._replacement_words(text, i, logits)]
            cands = [c for c in cands if c != w]
            counts = _flag_counts(w, cands, pol, rule)
            for k in mlm_totals:
                mlm_totals[k] += counts[k]
            mlm_n += len(cands)
            mlm_words_hit += counts["any"] > 0
            if counts["any"] and len(examples) < 8:
                bad = [c for c in cands if _flag_counts(w, [c], pol, rule)["any"]]
                examples.append(f"{w}→{', '.join(bad[:4])}")
            j = index.get(w.lower())
            if j is not None:  # TextFooler's candidates: 50 neighbours with cosine >= 0.5
                nb = [
                    res.vectors.words[x]
                    for x, s in zip(
                        res.vectors.neighbours[j][:50], res.vectors.similarities[j][:50], strict=True
                    )
                    if s >= 0.5
                ]
                vc = _flag_counts(w.lower(), nb, pol, rule)
                for k in vec_totals:
                    vec_totals[k] += vc[k]
                vec_n += len(nb)
                vec_words += 1
                vec_words_hit += vc["any"] > 0
        from robustprune.stats import rate

        out["samples"][name] = {
            "words": len(sample),
            "mlm_candidates": mlm_n,
            "mlm_share_of_candidates": {k: rate(v, mlm_n).to_dict() for k, v in mlm_totals.items()},
            "mlm_words_with_one": rate(mlm_words_hit, len(sample)).to_dict(),
            "mlm_examples": examples,
            "vectors_words": vec_words,
            "vectors_candidates": vec_n,
            "vectors_share_of_candidates": {k: rate(v, vec_n).to_dict() for k, v in vec_totals.items()},
            "vectors_words_with_one": rate(vec_words_hit, vec_words).to_dict(),
        }
        s = out["samples"][name]
        print(
            f"{name}: {len(sample)} words; masked-LM top-{args.mlm_k}: {mlm_n} candidates, label-changing "
            f"{pct(s['mlm_share_of_candidates']['any'])} (VADER {pct(s['mlm_share_of_candidates']['vader'])}, "
            f"WordNet {pct(s['mlm_share_of_candidates']['wordnet'])}); words with one "
            f"{pct(s['mlm_words_with_one'])} | counter-fitted top-50 cos>=0.5: {vec_n} candidates, "
            f"{pct(s['vectors_share_of_candidates']['any'])}; words with one {pct(s['vectors_words_with_one'])}",
            flush=True,
        )
        print("   e.g. " + "; ".join(examples[:6]))
    return out


# ------------------------------------------------------------------------------------------ --vectors


def vectors_audit(args: argparse.Namespace) -> dict:
    """Top-k neighbours in plain GloVe vs the counter-fitted vectors: antonym / opposite-polarity shares."""
    from robustprune import resources as registry
    from robustprune.attacks.bundle import load_bundle
    from robustprune.attacks.counterfit import normalise_rows
    from robustprune.attacks.embeddings import load_glove, nearest_neighbours
    from robustprune.attacks.validity import lemmas
    from robustprune.stats import rate

    rule, _, params = load_rule(args.params)
    res = load_bundle(args.resources)
    pol = polarity(args.resources)
    words = list(res.vectors.words)
    registry.download("glove50")
    glove_dir = registry.extract("glove50", RESOURCES / "glove50")
    raw, glove_words = load_glove(glove_dir, params.attack.resources.vocab_size)
    if glove_words != words:
        raise SystemExit("the bundle's vocabulary is not GloVe's first attack.resources.vocab_size words")
    plain = normalise_rows(raw)
    kmax = max(args.k)
    t0 = time.perf_counter()
    plain_nn, plain_sim = nearest_neighbours(plain, kmax)
    fitted_nn, fitted_sim = res.vectors.neighbours[:, :kmax], res.vectors.similarities[:, :kmax]
    vader = np.array([pol.vader.get(w, 0.0) for w in words])
    afinn = np.array([pol.afinn.get(w, 0) for w in words], dtype=float)
    # WordNet: j is an antonym of i when a lemma of j is an antonym of a lemma of i (validity.wordnet_antonyms)
    by_lemma: dict[str, list[int]] = {}
    word_lemmas = [lemmas(w, pol.wordnet) for w in words]
    for j, ls in enumerate(word_lemmas):
        for lemma in ls:
            by_lemma.setdefault(lemma, []).append(j)
    anti = [
        {j for la in ls for b in pol.wordnet.antonyms.get(la, ()) for j in by_lemma.get(b, ())}
        for ls in word_lemmas
    ]

    def flags(nn: np.ndarray) -> dict[str, np.ndarray]:
        a = vader[:, None]
        b = vader[nn]
        v = opposite_vec(a, b, rule.vader_threshold)
        f = opposite_vec(afinn[:, None], afinn[nn], rule.afinn_threshold)
        w = np.array([[j in anti[i] for j in row] for i, row in enumerate(nn)])
        return {"vader": v, "afinn": f, "wordnet": w, "any": v | f | w}

    polar = np.array(
        [
            abs(vader[i]) >= rule.vader_threshold or abs(afinn[i]) >= rule.afinn_threshold or bool(anti[i])
            for i in range(len(words))
        ]
    )
    out: dict = {
        "config": {
            "vocab_size": len(words),
            "k": args.k,
            "polar_words": int(polar.sum()),
            "bundle": str(args.resources),
        },
        "spaces": {},
    }
    examples = {}
    for space, nn, sim in (("plain GloVe", plain_nn, plain_sim), ("counter-fitted", fitted_nn, fitted_sim)):
        fl = flags(nn)
        rows = {}
        for k in args.k:
            for subset, mask in (("all words", np.ones(len(words), bool)), ("polar words", polar)):
                cell = {}
                for check, m in fl.items():
                    hits = m[mask, :k]
                    cell[check] = {
                        "share_of_neighbours": rate(int(hits.sum()), hits.size).to_dict(),
                        "words_with_one": rate(int(hits.any(axis=1).sum()), int(mask.sum())).to_dict(),
                    }
                rows[f"top-{k}, {subset}"] = cell
            cos = sim[:, :k] >= 0.5
            hits = fl["any"][:, :k] & cos
            rows[f"top-{k} with cosine >= 0.5, all words"] = {
                "any": {"share_of_neighbours": rate(int(hits.sum()), int(cos.sum())).to_dict()}
            }
        out["spaces"][space] = rows
        for w in ("good", "bad", "love", "boring", "funny", "brilliant", "worst"):
            i = words.index(w) if w in words else None
            if i is not None:
                examples.setdefault(w, {})[space] = [
                    words[j] + ("*" if fl["any"][i, n] else "") for n, j in enumerate(nn[i, :10])
                ]
    out["examples"] = examples  # first 10 neighbours; * = antonym or opposite polarity
    out["seconds"] = time.perf_counter() - t0
    for space, rows in out["spaces"].items():
        for key, cell in rows.items():
            extra = (
                f"; words with one: {pct(cell['any']['words_with_one'])}"
                if "words_with_one" in cell["any"]
                else ""
            )
            print(
                f"{space:<15} {key:<38} label-changing neighbours {pct(cell['any']['share_of_neighbours'])}{extra}"
            )
    for w, by in examples.items():
        print(
            f"  {w}: plain {' '.join(by.get('plain GloVe', []))} | fitted {' '.join(by.get('counter-fitted', []))}"
        )
    return out


def opposite_vec(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """:func:`robustprune.attacks.validity.opposite` on arrays."""
    return ((a >= t) & (b <= -t)) | ((a <= -t) & (b >= t))


def pct_md(r: dict) -> str:
    return "–" if not r["n"] else f"{100 * r['value']:.1f} [{100 * r['low']:.1f}, {100 * r['high']:.1f}]"


def markdown(report: dict) -> str:
    """The tables of docs/attacks.md section 7 from a results file (``--markdown``)."""
    checks = ("vader", "afinn", "wordnet", "compound", "rule")
    out = []
    if "csv_audit" in report:
        out += [
            "| model | recipe | rows | successes | "
            + " | ".join(f"{CHECK_TITLES[c]} % [95%]" for c in checks)
            + " | acc. under attack % | under valid attacks (any) % | (VADER only) % |",
            "|---|---|---|---|" + "---|" * (len(checks) + 3),
        ]
        for a in report["csv_audit"]["rows"]:
            out.append(
                f"| {a['model']} | {TITLES[a['recipe']]} | {a['rows']} | {a['successes']} | "
                + " | ".join(f"{a['shares'][c]['k']}: {pct_md(a['shares'][c])}" for c in checks)
                + f" | {pct_md(a['accuracy_under_attack'])} | **{pct_md(a['accuracy_under_valid_attack'])}** | "
                f"{pct_md(a['accuracy_under_valid_attack_by_check']['vader'])} |"
            )
    if report.get("csv_audit", {}).get("comparisons"):
        out += [
            "",
            "| A | B | relation | metric | n | A % [95%] | B % [95%] | A − B pts [95%] | verdict |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in report["csv_audit"]["comparisons"]:
            metric = c["metric"]
            title = (
                f"{TITLES[metric.removeprefix('valid:')]}, valid attacks"
                if metric.startswith("valid:")
                else TITLES[metric]
            )
            out.append(
                f"| {c['a']} | {c['b']} | {c['relation']} | {title} | {c['n']} | {pct_md(c['a_rate'])} | "
                f"{pct_md(c['b_rate'])} | {100 * c['diff']:+.1f} [{100 * c['low']:+.1f}, {100 * c['high']:+.1f}] | "
                f"{c['verdict']} |"
            )
    if "constraint" in report:
        out += [
            "",
            "| recipe | variant | acc. under attack % [95%] | vs as run, pts [95%] | successes | VADER flip % | "
            "label-changing (any) % | under valid attacks % | queries | CPU s / attacked ex. (× as run) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in report["constraint"]["runs"]:
            d = r.get("vs_as_run")
            diff = (
                "–"
                if not d
                else f"{100 * d['diff']:+.1f} [{100 * d['low']:+.1f}, {100 * d['high']:+.1f}] ({d['verdict']})"
            )
            out.append(
                f"| {TITLES[r['recipe']]} | {r['variant']} | {pct_md(r['accuracy_under_attack'])} | {diff} | "
                f"{r['successes']} | {pct_md(r['shares']['vader'])} | {pct_md(r['shares']['rule'])} | "
                f"{pct_md(r['accuracy_under_valid_attack'])} | {r['avg_queries']:.1f} | "
                f"{r['cpu_seconds_per_attacked']:.2f} ({r['cost_ratio']:.2f}) |"
            )
    if "mlm" in report:
        out += [
            "",
            "| sampled test words | candidate source | candidates | label-changing % [95%] | VADER % | AFINN % | "
            "WordNet % | words with one % |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for name, s in report["mlm"]["samples"].items():
            for src, key, words in (
                ("masked-LM stand-in, top-48", "mlm", s["words"]),
                ("counter-fitted, top-50 cos ≥ 0.5", "vectors", s["vectors_words"]),
            ):
                sh = s[f"{key}_share_of_candidates"]
                out.append(
                    f"| {name} ({words}) | {src} | {s[f'{key}_candidates']} | {pct_md(sh['any'])} | "
                    f"{pct_md(sh['vader'])} | {pct_md(sh['afinn'])} | {pct_md(sh['wordnet'])} | "
                    f"{pct_md(s[f'{key}_words_with_one'])} |"
                )
    if "vectors" in report:
        out += [
            "",
            "| neighbours | vectors | VADER flip % | AFINN flip % | WordNet antonym % | any % [95%] | words with one % |",
            "|---|---|---|---|---|---|---|",
        ]
        spaces = report["vectors"]["spaces"]
        for key in spaces["plain GloVe"]:
            for space in ("plain GloVe", "counter-fitted"):
                cell = spaces[space][key]
                parts = [
                    f"{100 * cell[c]['share_of_neighbours']['value']:.2f}" if c in cell else "–"
                    for c in ("vader", "afinn", "wordnet")
                ]
                one = pct_md(cell["any"]["words_with_one"]) if "words_with_one" in cell["any"] else "–"
                out.append(
                    f"| {key} | {space} | {' | '.join(parts)} | {pct_md(cell['any']['share_of_neighbours'])} | {one} |"
                )
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if print_markdown(args.markdown, markdown):
        return 0
    if args.csv:
        write_part(args.out, "csv_audit", csv_audit(args))
    if args.vectors:
        write_part(args.out, "vectors", vectors_audit(args))
    if args.mlm:
        write_part(args.out, "mlm", mlm_audit(args))
    if args.constraint:
        write_part(args.out, "constraint", constraint_runs(args))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

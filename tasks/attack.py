"""attack: accuracy under attack of the chosen models, one Prefect task per (model, recipe, shard).

The attacked examples are the same seeded ``attack.num_examples`` rows of the test split for every model
and recipe. Each shard is a task with ``retries`` and a persisted result keyed by the model's weights,
the recipe, the shard's rows, the attack resources and the attack code: a crashed or killed stage reruns
only the shards that did not finish, and a changed model re-attacks only that model.
"""

from __future__ import annotations

import functools
import hashlib
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from prefect import task
from prefect.context import TaskRunContext

from robustprune.config import Params
from robustprune.data import load_splits
from robustprune.registry import PROXY, RECIPES
from tasks.attack_resources import attack_dir
from tasks.common import Layout, all_models, code_digest, model_digest, sha256_files


def model_paths(params: Params, layout: Layout) -> dict[str, dict]:
    """Every model the pipeline produces: name -> {name, path, kind, method, sparsity}."""
    return {m["name"]: m for m in all_models(params, layout)}


def attacked_examples(params: Params, layout: Layout) -> list[int]:
    """The seeded test rows every model and recipe is attacked on.

    The first ``attack.num_examples`` rows of one seeded permutation of the test split, in that order: a
    larger run (the evidence profile) attacks a superset, and its first shards are the smaller run's shards
    (cache hits).
    """
    return seeded_prefix(len(load_splits(layout.data).test), params.attack.num_examples, params.attack.seed)


def seeded_prefix(n_rows: int, n: int, seed: int) -> list[int]:
    """The first ``n`` rows of a seeded permutation of ``range(n_rows)`` (nested across ``n``)."""
    perm = np.random.default_rng(seed).permutation(n_rows)
    return [int(i) for i in perm[: min(n, n_rows)]]


def shards(rows: list[int], size: int) -> list[list[int]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


@functools.cache
def _code_digest() -> str:
    """The attack code a shard's outcomes depend on (the one helper every cache key uses)."""
    return code_digest("robustprune.attacks", "robustprune.modeling")


@functools.cache
def _resources_digest(directory: str) -> str:
    d = Path(directory)
    files = (d / "vectors.npz", d / "info.json", d / "pos.json", d / "polarity" / "antonyms.json")
    return sha256_files(*(p for p in files if p.exists()))[:16]


def _shard_key(_ctx: TaskRunContext, p: dict) -> str:
    params, layout, model, recipe, rows = p["params"], p["layout"], p["model"], p["recipe"], p["rows"]
    split = p.get("split", "test")
    budget = _budget(params, p.get("query_budget", "attack"))
    a = params.attack
    return "-".join(
        [
            "attack",
            recipe,
            model_digest(model["path"])[:16],
            sha256_files(layout.data / f"{split}.parquet")[:12],
            _resources_digest(str(attack_dir(layout))),
            _code_digest(),
            f"{rows[0]}-{len(rows)}-{hashlib.sha256(str(list(rows)).encode()).hexdigest()[:10]}",
            f"{budget}-{a.batch_size}-{params.data.max_length}",
            _options_digest(recipe_options(params, recipe)),
            *([code_digest("robustprune.a2t")] if recipe == PROXY_RECIPE else []),  # the other keys unchanged
        ]
    )


#: the soup criterion's cheap proxy attack (soup.attack.recipe: a2t): A2T's recipe (robustprune.a2t), not an
#: evaluation recipe of the attack stage
PROXY_RECIPE = PROXY.name


def _budget(params: Params, query_budget: int | None | str) -> int | None:
    """``"attack"``: the attack stage's ``attack.query_budget``; else the caller's own (the soup stage's)."""
    return params.attack.query_budget if query_budget == "attack" else query_budget


def recipe_options(params: Params, recipe: str) -> dict:
    """The params-level options of ``recipe`` (passed to its ``build``; part of the shard's cache key).

    ``polarity_constraint`` only when ``attack.validity.constraint`` is on (issue #28).
    """
    # the recipe's own section of params.attack, as robustprune.registry declares it
    section = RECIPES[recipe].options if recipe in RECIPES else None
    options = getattr(params.attack, section).model_dump() if section else {}
    v = params.attack.validity
    if v.constraint:
        options["polarity_constraint"] = {
            "checks": list(v.constraint_checks),
            "vader_threshold": v.vader_threshold,
            "afinn_threshold": v.afinn_threshold,
        }
    return options


def _options_digest(options: dict) -> str:
    import hashlib
    import json

    return hashlib.sha256(json.dumps(options, sort_keys=True).encode()).hexdigest()[:8]


@functools.cache
def _resources(directory: str):  # noqa: ANN202 - AttackResources
    from robustprune.attacks.bundle import load_bundle

    return load_bundle(Path(directory))


@functools.cache
def _encoder(directory: str):  # noqa: ANN202 - MeanPooledEncoder
    """One sentence encoder per process: its text -> embedding cache is valid across models and recipes."""
    from robustprune.attacks.similarity import MeanPooledEncoder

    return MeanPooledEncoder.from_dir(Path(directory))


VICTIM_CACHE = 1 << 16  # logit rows kept per victim model (a few MB)


@functools.lru_cache(maxsize=2)
def _victim(path: str, digest: str, device: str, max_length: int, batch_size: int):  # noqa: ANN202
    """One victim wrapper per model per process (the last two models): its logit cache serves every recipe
    and shard of that model (textattack's own cache is cleared after each example). ``digest`` (the
    weights' content hash) keys it, so a model rebuilt under the same path is loaded afresh."""
    from robustprune.attacks.wrapper import FastClassifierWrapper
    from robustprune.modeling import load_classifier, load_tokenizer

    net = load_classifier(path).to(device)
    return FastClassifierWrapper(
        net, load_tokenizer(path), max_length=max_length, batch_size=batch_size, cache_size=VICTIM_CACHE
    )


@functools.cache
def _masked_lm(directory: str):  # noqa: ANN202 - (model, tokenizer)
    """BERT-Attack's masked LM, loaded once per process."""
    from robustprune.attacks.bert_attack import load_mlm

    return load_mlm(directory)


@functools.cache
def _tagger(directory: str | None):  # noqa: ANN202 - ContextTagger | None
    """One POS tagger per process (its window -> tags cache is valid across models); None without one."""
    from robustprune.attacks.tagger import load_tagger_or_none

    return load_tagger_or_none(Path(directory) if directory else None)


@task(name="attack-shard", tags=["gpu"], cache_key_fn=_shard_key, persist_result=True, retries=2)
def attack_shard(
    params: Params,
    layout: Layout,
    model: dict,
    recipe: str,
    rows: list[int],
    split: str = "test",
    query_budget: int | None | str = "attack",
) -> dict:
    """Attack rows ``rows`` of a split (the test split; the soup stage attacks validation rows) on one model
    with one recipe; per-example results + timings. ``query_budget``: ``"attack"`` = ``attack.query_budget``."""
    from robustprune.attacks import build_attack, fastpaths
    from robustprune.attacks.components import pos_label
    from robustprune.attacks.runner import attack_examples, check_labels, forward_floor, reset_forward_stats
    from robustprune.modeling import resolve_device

    fastpaths.install()
    budget = _budget(params, query_budget)
    test = getattr(load_splits(layout.data), split)
    wrapper = _victim(
        str(model["path"]),
        model_digest(model["path"]),
        str(resolve_device(params.runtime.device)),
        params.data.max_length,
        params.attack.batch_size,
    )
    check_labels(wrapper.num_labels, test["label"].tolist(), num_data_labels=int(test["label"].max()) + 1)
    res = _resources(str(attack_dir(layout)))
    options = recipe_options(params, recipe)
    declared = PROXY if recipe == PROXY_RECIPE else RECIPES.get(recipe)  # unknown: build_attack says so
    loads = declared.loads if declared else ()
    if "tagger" in loads:
        options["tagger"] = _tagger(str(res.tagger_dir) if res.tagger_dir else None)
    if "masked_lm" in loads and res.mlm_dir is not None:
        options["masked_lm"] = _masked_lm(str(res.mlm_dir))
    if recipe == PROXY_RECIPE:  # gradient word importance: a wrapper with get_grad, no logit cache
        from robustprune.a2t import GradientClassifierWrapper
        from robustprune.a2t import build_attack as build_proxy

        wrapper = GradientClassifierWrapper(
            wrapper.model, wrapper.tokenizer, max_length=wrapper.max_length, batch_size=wrapper.batch_size
        )
        attack = build_proxy(
            wrapper, res, query_budget=budget, encoder=_encoder(str(res.encoder_dir)), **options
        )
    else:
        attack = build_attack(
            recipe,
            wrapper,
            res,
            query_budget=budget,
            encoder=_encoder(str(res.encoder_dir)),
            **options,
        )
    reset_forward_stats(attack)
    examples = [(str(test["text"].iloc[i]), int(test["label"].iloc[i])) for i in rows]
    t0 = time.perf_counter()
    results = attack_examples(attack, examples, query_budget=budget, progress=False)
    wall = time.perf_counter() - t0
    records = []
    for row, r in zip(rows, results, strict=True):
        rec = asdict(r)
        rec["test_row"] = row
        records.append(rec)
    return {
        "records": records,
        "wall_seconds": wall,
        "forward": forward_floor(attack),
        "pos_tagger": pos_label(attack),
    }

"""soup: score ingredients and candidate soups (clean validation accuracy, validation accuracy under attack),
save the greedy and uniform soups.

Candidate soups are saved under ``.cache/soup-work/<members digest>/`` so that the attack tasks that judge them
(``tasks.attack.attack_shard`` on validation rows, cached by the weights' content hash) and a rerun reuse them.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

from prefect import task

from robustprune.checkpoints import atomic_dir, load_tensors, read_json, save_pretrained_atomic, write_json
from robustprune.config import Params
from robustprune.data import load_splits
from robustprune.metrics import evaluate_accuracy
from robustprune.modeling import load_classifier, load_tokenizer, resolve_device
from robustprune.own_model import set_label_names
from robustprune.soup import GreedyResult, SoupScore, average_state_dicts
from tasks.attack import attack_shard, seeded_prefix, shards
from tasks.common import Layout, model_digest


def soup_work(layout: Layout) -> Path:
    return layout.root / ".cache" / "soup-work"


def validation_rows(params: Params, layout: Layout) -> list[int]:
    """The seeded validation rows every ingredient and candidate soup is attacked on (sorted)."""
    n_val = len(load_splits(layout.data).validation)
    return seeded_prefix(n_val, params.soup.attack.num_examples, params.soup.attack.seed)


def _eval_kwargs(params: Params) -> dict:
    return {
        "batch_size": params.evaluate.batch_size,
        "max_length": params.data.max_length,
        "device": resolve_device(params.runtime.device),
    }


def _average(layout: Layout, members: list[str]):  # noqa: ANN202 - (model, tokenizer)
    """The uniform average of the members' weights, loaded into the first member's architecture."""
    dirs = [layout.finetuned / n for n in members]
    model = load_classifier(dirs[0])
    full = model.state_dict()
    sds = []
    for d in dirs:
        sd = {k: v.clone() for k, v in full.items()}
        extra = set(loaded := load_tensors(d / "model.safetensors")) - set(sd)
        if extra:
            raise ValueError(f"{d}: checkpoint has tensors the model does not: {sorted(extra)[:5]}")
        sd.update(loaded)
        sds.append(sd)
    model.load_state_dict(average_state_dicts(sds))
    return model, load_tokenizer(dirs[0])


def ingredient(layout: Layout, name: str) -> dict:
    """An ingredient as a scored model: its directory and clean validation accuracy (from fine-tuning)."""
    path = layout.finetuned / name
    return {
        "name": name,
        "path": str(path),
        "accuracy": read_json(path / "metrics.json")["validation_accuracy"],
    }


@task(name="soup-candidate", tags=["cpu"])
def soup_candidate(params: Params, layout: Layout, members: list[str]) -> dict:
    """Average ``members``, save the candidate (once, keyed by the members' weights) and score it on the
    clean validation split."""
    digests = [model_digest(layout.finetuned / n)[:16] for n in members]
    key = hashlib.sha256(json.dumps([members, digests]).encode()).hexdigest()[:16]
    path = soup_work(layout) / key
    done = path / "metrics.json"
    if done.is_file() and (path / "model.safetensors").is_file():
        return read_json(done)
    model, tok = _average(layout, members)
    splits = load_splits(layout.data)
    val = splits.validation
    acc = evaluate_accuracy(model, tok, val["text"].tolist(), val["label"].tolist(), **_eval_kwargs(params))
    out = {"name": "+".join(members), "path": str(path), "members": members, "accuracy": acc.accuracy}
    set_label_names(model, splits.label_names)
    save_pretrained_atomic(model, tok, path, extra={"metrics.json": out})
    return out


def robustness(params: Params, layout: Layout, model: dict, rows: list[int]) -> dict:
    """Validation accuracy under ``soup.attack.recipe`` of one model (attack tasks, cached per shard)."""
    from robustprune.attacks.metrics import summarize
    from robustprune.attacks.runner import ExampleResult

    a = params.soup.attack
    t0 = time.perf_counter()
    parts = [
        attack_shard.with_options(task_run_name=f"soup-attack-{a.recipe}-{model['name']}-{i}")(
            params, layout, model, a.recipe, part, split="validation", query_budget=a.query_budget
        )
        for i, part in enumerate(shards(rows, params.attack.shard_size))
    ]
    fields = set(ExampleResult.__dataclass_fields__)
    records = [r for p in parts for r in p["records"]]
    summary = summarize([ExampleResult(**{k: v for k, v in r.items() if k in fields}) for r in records])
    return {
        "robustness": summary.accuracy_under_attack,
        "attack_success_rate": summary.attack_success_rate,
        "attacked": summary.num_examples,
        "failed": summary.num_failed,
        "attack_seconds": time.perf_counter() - t0,
        "outcomes": [r["outcome"] for r in records],
    }


def score_of(entry: dict) -> SoupScore:
    return SoupScore(entry["accuracy"], entry.get("robustness"), entry.get("attacked"))


@task(name="soup-skip", tags=["cpu"])
def record_no_soup(params: Params, layout: Layout) -> dict:
    """``model.finetuned``: no soup. ``models/soup/`` holds only this record (the stage's DVC output); the
    dense reference is ``models/finetuned/finetuned``, where the finetune stage put the given classifier."""
    from robustprune.config import FINETUNED_NAME

    out = {
        "skipped": "model.finetuned is set: the given classifier is the dense reference, no soup is made",
        "dense": {"name": FINETUNED_NAME, "source": params.model.finetuned},
        "criterion": None,
        "ranking": [],
        "best_ingredient": None,
        "ingredients": {},
        "candidates": [],
    }
    with atomic_dir(layout.soup) as tmp:
        write_json(tmp / "skipped.json", out)
    return out


@task(name="soup-save", tags=["cpu"])
def save_soups(
    params: Params, layout: Layout, greedy: GreedyResult, ingredients: dict[str, dict], candidates: list[dict]
) -> dict:
    """Write models/soup/{greedy,uniform} with their clean validation and test accuracy and the history."""
    splits = load_splits(layout.data)
    ev = _eval_kwargs(params)
    names = params.ingredient_names()
    out: dict = {
        "criterion": params.soup.criterion,
        "max_accuracy_drop": params.soup.max_accuracy_drop,
        "attack": params.soup.attack.model_dump() if params.soup.criterion == "robustness" else None,
        "ranking": greedy.ranking,
        "best_ingredient": greedy.ranking[0],
        "ingredients": {n: {k: v for k, v in e.items() if k != "outcomes"} for n, e in ingredients.items()},
        "candidates": [{k: v for k, v in c.items() if k != "outcomes"} for c in candidates],
    }
    for kind, members in (("greedy", greedy.members), ("uniform", names)):
        model, tok = _average(layout, members)
        val = evaluate_accuracy(
            model, tok, splits.validation["text"].tolist(), splits.validation["label"].tolist(), **ev
        )
        test = evaluate_accuracy(
            model, tok, splits.test["text"].tolist(), splits.test["label"].tolist(), **ev
        )
        metrics = {
            "validation_accuracy": val.accuracy,
            "test_accuracy": test.accuracy,
            "members": members,
            "history": greedy.history if kind == "greedy" else [],
        }
        if kind == "greedy":
            metrics["validation_robustness"] = greedy.score.robustness
        set_label_names(model, splits.label_names)
        save_pretrained_atomic(model, tok, layout.soup / kind, extra={"metrics.json": metrics})
        out[kind] = metrics
    return out

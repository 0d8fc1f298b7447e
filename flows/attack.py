"""attack: TextFooler, BERT-Attack and TextBugger on the chosen models (``python -m flows.attack``).

Writes ``reports/attack.json`` (one row per model x recipe: textattack's metrics, wall time, the
forward floor, the recipe's ``options`` from params and ``pos_tagger``: which part-of-speech check ran,
the spaCy tagger's name or ``wordnet-lexical`` when the bundle has no tagger) and ``reports/attacks/<model>/<recipe>.csv`` (one line per example: original and
perturbed text, labels, outcome, queries), both also logged to MLflow.
"""

from __future__ import annotations

import csv
import io
import shutil

import mlflow
from prefect import flow
from prefect.logging import get_run_logger

import flows  # noqa: F401
from robustprune.checkpoints import write_json, write_text
from tasks.attack import attack_shard, attacked_examples, model_paths, recipe_options, shards
from tasks.common import best_ingredient, default_task_runner, load, log_metrics, section, stage_run
from tasks.dvc_sync import worker_sync

CSV_FIELDS = [
    "test_row",
    "label",
    "original_prediction",
    "perturbed_prediction",
    "outcome",
    "num_queries",
    "words_perturbed_fraction",
    "original_text",
    "perturbed_text",
]


def summary_row(model: dict, recipe: str, parts: list[dict]) -> dict:
    from robustprune.attacks.metrics import summarize
    from robustprune.attacks.runner import ExampleResult

    records = [r for p in parts for r in p["records"]]
    fields = set(ExampleResult.__dataclass_fields__)
    summary = summarize([ExampleResult(**{k: v for k, v in r.items() if k in fields}) for r in records])
    wall = sum(p["wall_seconds"] for p in parts)
    floor = sum(p["forward"]["floor_seconds"] for p in parts)
    forward = {
        k: sum(p["forward"].get(k, 0) for p in parts)
        for k in (
            "victim_seconds",
            "victim_texts",
            "encoder_seconds",
            "encoder_texts",
            "encoder_requested",
            "mlm_seconds",
        )
    }
    return {
        "model": model["name"],
        "kind": model["kind"],
        "method": model["method"],
        "sparsity": model["sparsity"],
        "recipe": recipe,
        **(summary if isinstance(summary, dict) else vars(summary)),
        "wall_seconds": wall,
        "floor_seconds": floor,
        "wall_over_floor": wall / floor if floor else None,
        **forward,
        "seconds_per_example": wall / max(len(records), 1),
        # which part-of-speech check ran: the tagger's name, "wordnet-lexical" (fallback), or None (no POS)
        "pos_tagger": next((p["pos_tagger"] for p in parts if p.get("pos_tagger")), None),
    }


def records_csv(parts: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    w.writeheader()
    for p in parts:
        w.writerows(p["records"])
    return buf.getvalue()


@flow(name="attack", log_prints=True, task_runner=default_task_runner())
def attack_flow(params_path: str = "params.yaml", root: str = ".") -> list[dict]:
    logger = get_run_logger()
    params, layout = load(params_path, root)
    rows: list[dict] = []
    with (
        worker_sync("attack", layout.root),
        stage_run("attack", params, layout.root, section(params, "attack", "data.max_length")),
    ):
        models = model_paths(params, layout)
        best = best_ingredient(layout)
        examples = attacked_examples(params, layout)
        # attack.more.models: the first attack.more.num_examples of the same rows (a prefix: paired with the rest)
        plan = {name: examples for name in params.attacked_models(best)}
        plan |= {
            name: examples[: params.attack.more.num_examples] for name in params.more_attacked_models(best)
        }
        names = list(plan)
        logger.info(
            "attacking %d model(s) %s with %s on %d test examples (seed %d)",
            len(names),
            names,
            params.attack.recipes,
            len(examples),
            params.attack.seed,
        )
        # every shard of every (model, recipe) is submitted first, so that a task runner with several
        # workers (runtime.task_runner / max_workers) attacks them in parallel; results are read in order
        submitted = {
            (name, recipe): [
                attack_shard.with_options(task_run_name=f"attack-{recipe}-{name}-{i}").submit(
                    params, layout, models[name], recipe, rows_
                )
                for i, rows_ in enumerate(shards(plan[name], params.attack.shard_size))
            ]
            for name in names
            for recipe in params.attack.recipes
        }
        for name in names:
            model = models[name]
            for recipe in params.attack.recipes:
                parts = [f.result() for f in submitted[(name, recipe)]]
                row = summary_row(model, recipe, parts)
                row["options"] = recipe_options(params, recipe)
                rows.append(row)
                csv_path = layout.reports / "attacks" / name / f"{recipe}.csv"
                write_text(csv_path, records_csv(parts))
                mlflow.log_artifact(str(csv_path), artifact_path=f"attacks/{name}")
                log_metrics(
                    {
                        f"{name}.{recipe}.{k}": row[k]
                        for k in (
                            "original_accuracy",
                            "accuracy_under_attack",
                            "attack_success_rate",
                            "avg_queries",
                        )
                        if isinstance(row.get(k), int | float)
                    }
                )
                logger.info(
                    "%s / %s: accuracy %.3f -> %.3f under attack, success %.3f, %.0f queries, wall/floor %s",
                    name,
                    recipe,
                    row.get("original_accuracy", float("nan")),
                    row.get("accuracy_under_attack", float("nan")),
                    row.get("attack_success_rate", float("nan")),
                    row.get("avg_queries", float("nan")),
                    f"{row['wall_over_floor']:.2f}" if row["wall_over_floor"] else "-",
                )
        attacks_dir = layout.reports / "attacks"
        wanted = {f"{r['model']}/{r['recipe']}.csv" for r in rows}
        if attacks_dir.is_dir():  # per-example CSVs of models or recipes no longer attacked would be stale
            for stale in attacks_dir.glob("*/*.csv"):
                if stale.relative_to(attacks_dir).as_posix() not in wanted:
                    stale.unlink()
            for d in attacks_dir.iterdir():
                if d.is_dir() and not any(d.iterdir()):
                    shutil.rmtree(d)
        write_json(attacks_dir / "index.json", [[r["model"], r["recipe"]] for r in rows])
        write_json(layout.reports / "attack.json", rows)
    return rows


if __name__ == "__main__":
    from flows._cli import main

    main("attack", attack_flow)

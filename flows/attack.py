"""attack: TextFooler, BERT-Attack and TextBugger on the chosen models (``python -m flows.attack``).

Writes ``reports/attack.json`` (one row per model x recipe: textattack's metrics, wall time, the
forward floor, the recipe's ``options`` from params and ``pos_tagger``: which part-of-speech check ran,
the spaCy tagger's name or ``wordnet-lexical`` when the bundle has no tagger) and ``reports/attacks/<model>/<recipe>.csv`` (one line per example: original and
perturbed text, labels, outcome, queries), both also logged to MLflow.
"""

from __future__ import annotations

import mlflow
from prefect import flow
from prefect.logging import get_run_logger

import flows  # noqa: F401
from plumbing.dvc_sync import worker_sync
from plumbing.runners import default_task_runner
from robustprune.attacks.shards import records_csv, summary_row
from robustprune.checkpoints import keep_only, write_json, write_text
from tasks.attack import attack_shard, attacked_examples, model_paths, recipe_options, shards
from tasks.common import best_ingredient, load, log_metrics, section, stage_run


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
        # per-example CSVs of models or recipes no longer attacked would be stale
        keep_only(attacks_dir, {f"{r['model']}/{r['recipe']}.csv" for r in rows}, "*/*.csv")
        write_json(attacks_dir / "index.json", [[r["model"], r["recipe"]] for r in rows])
        write_json(layout.reports / "attack.json", rows)
    return rows


if __name__ == "__main__":
    from plumbing.cli import main

    main("attack", attack_flow)

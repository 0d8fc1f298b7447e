"""soup: the greedy soup, ranked by robustness (RAKP's robust dense start) or accuracy, and the uniform soup
(``python -m flows.soup``). The ingredients are ``finetune.variants`` or, when given, ``soup.ingredients``;
with ``model.finetuned`` there is no soup and the stage only records that (``models/soup/skipped.json``).

With ``soup.criterion: robustness`` every ingredient and every candidate soup is attacked with
``soup.attack.recipe`` on the same seeded validation rows (the attack stage's resources, wrapper and cached
shard tasks); the greedy rule lives in :func:`robustprune.soup.greedy_select`.
"""

from __future__ import annotations

import mlflow
from prefect import flow
from prefect.logging import get_run_logger

import flows  # noqa: F401
from plumbing.runners import default_task_runner
from robustprune.checkpoints import write_json
from robustprune.soup import SoupScore, greedy_select
from tasks.common import load, section, stage_run
from tasks.soup import (
    ingredient,
    record_no_soup,
    robustness,
    save_soups,
    score_of,
    soup_candidate,
    validation_rows,
)


@flow(name="soup", log_prints=True, task_runner=default_task_runner())
def soup_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    logger = get_run_logger()
    params, layout = load(params_path, root)
    robust = params.soup.criterion == "robustness"
    logged = section(params, "soup", "finetune.variants", "model.finetuned", "evaluate", "data.max_length")
    with stage_run("soup", params, layout.root, logged):
        if params.dense_source == "finetuned":  # the given classifier is the dense reference: no soup
            out = record_no_soup(params, layout)
            logger.info("no soup: model.finetuned = %s is the dense reference", params.model.finetuned)
            mlflow.set_tag("skipped", out["skipped"])
            write_json(layout.reports / "soup.json", out)
            return out
        rows = validation_rows(params, layout) if robust else []
        ingredients: dict[str, dict] = {}
        for name in params.ingredient_names():
            entry = ingredient(layout, name)
            if robust:
                entry.update(robustness(params, layout, entry, rows))
            ingredients[name] = entry
            logger.info("ingredient %s: %s", name, _fmt(entry))
        candidates: list[dict] = []

        def evaluate(members) -> SoupScore:  # noqa: ANN001 - a list of ingredient names
            cand = soup_candidate.with_options(task_run_name=f"soup-candidate-{len(members)}")(
                params, layout, list(members)
            )
            if robust:
                cand = {**cand, **robustness(params, layout, cand, rows)}
            candidates.append(cand)
            logger.info("candidate %s: %s", cand["name"], _fmt(cand))
            return score_of(cand)

        greedy = greedy_select(
            {n: score_of(e) for n, e in ingredients.items()},
            evaluate,
            criterion=params.soup.criterion,
            max_accuracy_drop=params.soup.max_accuracy_drop,
        )
        out = save_soups(params, layout, greedy, ingredients, candidates)
        logger.info("greedy soup: %s (ranking %s)", greedy.members, greedy.ranking)
        for step, h in enumerate(greedy.history):
            mlflow.log_metrics(
                {k: float(h[k]) for k in ("accuracy", "robustness") if h.get(k) is not None}, step=step
            )
        for kind in ("greedy", "uniform"):
            mlflow.log_metrics(
                {
                    f"{kind}.validation_accuracy": out[kind]["validation_accuracy"],
                    f"{kind}.test_accuracy": out[kind]["test_accuracy"],
                }
            )
        mlflow.set_tag("greedy_members", ",".join(out["greedy"]["members"]))
        mlflow.set_tag("best_ingredient", out["best_ingredient"])
        mlflow.log_dict({"history": greedy.history, "ranking": greedy.ranking}, "soup_history.json")
        write_json(layout.reports / "soup.json", out)
    return out


def _fmt(entry: dict) -> str:
    rob = entry.get("robustness")
    extra = f", under attack {100 * rob:.1f}% of {entry['attacked']}" if rob is not None else ""
    return f"clean validation {100 * entry['accuracy']:.1f}%{extra}"


if __name__ == "__main__":
    from plumbing.cli import main

    main("soup", soup_flow)

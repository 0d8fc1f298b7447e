"""MLflow as the review surface: one run per model, pruned checkpoints registered without copying weights.

:func:`log_model_runs` runs at the end of the report stage (flows/report.py), when every number exists. For
each model of :func:`tasks.common.all_models` it writes one MLflow run, nested under the run of the stage
that made the model in the same pipeline run (variants under ``finetune``, soups under ``soup``, pruned
models under ``prune`` -- into the (method, sparsity) run that stage already opened --, SDS under ``sds``,
CAP under ``cap``), or under the report run when that stage was skipped (a DVC cache hit) or the report ran
alone. Each run has

- params ``kind``, ``method``, ``sparsity`` (the label: ``0.5``, ``2:4``), ``source`` (the model it came
  from) and ``recipe.*`` (the settings that made it), so the runs table sorts and filters by method and
  sparsity;
- metrics from ``reports/eval.json`` (``accuracy`` with its Wilson 95% interval ``accuracy_low`` /
  ``accuracy_high``, ``correct``, ``total``, ``measured_sparsity``, ``target_sparsity``, ``fidelity``,
  ``transfer_accuracy.<set>`` with intervals), ``reports/attack.json`` (``accuracy_under_attack.<recipe>``
  with intervals, ``attack_success_rate.<recipe>``) and ``reports/prune.json`` / ``reports/sds.json``
  (``prune_seconds``, ``sds_seconds``), so the chart view plots accuracy against sparsity.

Every sparse checkpoint (pruned, SDS, CAP) becomes an external MLflow *logged model* -- no weights are
copied: its tags name the DVC path (``models/pruned/<name>``), the content hash of its weights and the
``dvc.lock`` hash of the DVC output that holds it -- with the run's metrics attached, and a version of the
registered model ``<experiment>-pruned``. The alias ``best_<sparsity>`` (``best_0p5``, ``best_2of4``) points
at the most accurate version of each sparsity.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from robustprune.config import Params, parse_sparsity
from robustprune.stats import rate
from tasks.common import Layout, all_models, flatten, model_digest, section

STAGE_OF = {
    "finetuned": "finetune",
    "variant": "finetune",
    "soup": "soup",
    "pruned": "prune",
    "sds": "sds",
    "cap": "cap",
}
REGISTERED_KINDS = ("pruned", "sds", "cap")
MODEL_TAG = "robustprune.model"


def registered_name(params: Params) -> str:
    """The registered model that holds every sparse checkpoint of this experiment."""
    return f"{params.runtime.experiment}-pruned"


def alias_for(sparsity: str) -> str:
    """Registry alias of the best model at a sparsity label: ``0.5`` -> ``best_0p5``, ``2:4`` -> ``best_2of4``."""
    return "best_" + sparsity.replace(".", "p").replace(":", "of")


def version_model_id(version) -> str:  # noqa: ANN001 - mlflow ModelVersion
    """The logged model behind a registry version (a sqlite store keeps it only in ``source``)."""
    return version.model_id or version.source.removeprefix("models:/")


def logged_model_name(name: str) -> str:
    """A model name MLflow accepts (no ``/ : . % " '``): ``rakp_0.5`` -> ``rakp_0p5``; tags keep the real name."""
    for bad, good in ((".", "p"), (":", "of"), ("/", "-"), ("%", "pct"), ('"', ""), ("'", "")):
        name = name.replace(bad, good)
    return name


def target_sparsity(label: str) -> float:
    """The fraction of zeros a sparsity label asks for (``2:4`` -> 0.5, N:M keeps N of every M)."""
    s, n, m = parse_sparsity(label)
    return 1.0 - n / m if n is not None else float(s)


def _read(path: Path, default: Any) -> Any:
    return json.loads(path.read_text()) if path.is_file() else default


def _with_interval(prefix: str, k: int, n: int) -> dict[str, float]:
    r = rate(k, n)
    return {prefix: r.value, f"{prefix}_low": r.low, f"{prefix}_high": r.high}


def model_metrics(
    model: Mapping, evaluated: Mapping, attacks: list[Mapping], prune: Mapping, sds: Mapping
) -> dict:
    """Every number the pipeline measured for one model, flat, with 95% intervals next to each rate."""
    name = model["name"]
    out: dict[str, float] = {"target_sparsity": target_sparsity(model["sparsity"])}
    if evaluated:
        out |= _with_interval("accuracy", evaluated["correct"], evaluated["total"])
        out |= {"correct": evaluated["correct"], "total": evaluated["total"]}
        out["measured_sparsity"] = evaluated["measured_sparsity"]
        for key, t in (evaluated.get("transfer") or {}).items():
            out |= _with_interval(f"transfer_accuracy.{key}", t["correct"], t["n"])
        if "fidelity" in evaluated:
            out["fidelity"] = evaluated["fidelity"]["mean"]
    for a in attacks:
        if a["model"] == name and a.get("num_examples"):
            out |= _with_interval(f"accuracy_under_attack.{a['recipe']}", a["num_failed"], a["num_examples"])
            out[f"attack_success_rate.{a['recipe']}"] = a["attack_success_rate"]
    if name in prune:
        out |= {k: prune[name][k] for k in ("prune_seconds", "wall_seconds") if k in prune[name]}
    if name in sds and "seconds" in sds[name]:
        out["sds_seconds"] = sds[name]["seconds"]
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and v == v}  # drop NaN


def model_params(params: Params, model: Mapping, prune: Mapping, soup: Mapping) -> dict[str, str]:
    """kind / method / sparsity / source and the recipe that made the model, as MLflow params."""
    kind, name = model["kind"], model["name"]
    recipe: dict[str, Any] = {}
    source = ""
    given = dict(params.soup.ingredient_entries)
    if kind == "finetuned":  # model.finetuned: the classifier as given
        source = str(params.model.finetuned)
    elif kind == "variant" and name in given:  # soup.ingredients: a checkpoint as given, no recipe here
        source = given[name]
    elif kind == "variant":
        source = params.model.name
        recipe = next(v.model_dump(mode="json") for v in params.finetune.variants if v.name == name)
    elif kind == "soup":
        which = name.removeprefix("soup-")
        members = soup.get(which, {}).get("members") or params.ingredient_names()
        source = ",".join(members)
        recipe = {"criterion": soup.get("criterion", params.soup.criterion)} if which == "greedy" else {}
    elif kind == "pruned":
        source = str(prune.get(name, {}).get("source", params.soup.prune_source))
        recipe = {
            k: v for k, v in section(params, "prune")["prune"].items() if k not in ("methods", "sparsities")
        }
    elif kind == "sds":
        source = name.removeprefix("sds-")
        recipe = {
            k: v for k, v in section(params, "sds")["sds"].items() if k not in ("methods", "sparsities")
        }
    elif kind == "cap":
        source = params.soup.prune_source
        recipe = {k: v for k, v in section(params, "cap")["cap"].items() if not isinstance(v, list | dict)}
    out = {"kind": kind, "method": model["method"], "sparsity": model["sparsity"], "source": source}
    out |= {f"recipe.{k}": v for k, v in flatten(recipe).items()}
    return {k: (s if len(s := str(v)) <= 500 else s[:497] + "...") for k, v in out.items()}


def _dvc_out(layout: Layout, path: Path) -> tuple[str, str]:
    """The DVC output (dvc.lock) that holds ``path`` and its recorded hash, or ("", "")."""
    lock = layout.root / "dvc.lock"
    if not lock.is_file():
        return "", ""
    import yaml

    rel = path.resolve().relative_to(layout.root).as_posix()
    for stage in (yaml.safe_load(lock.read_text()) or {}).get("stages", {}).values():
        for out in stage.get("outs", []):
            if rel == out["path"] or rel.startswith(out["path"].rstrip("/") + "/"):
                return out["path"], str(out.get("md5") or out.get("hash") or "")
    return "", ""


def _stage_runs(client, exp_id: str, parent: str | None) -> dict[str, str]:  # noqa: ANN001 - MlflowClient
    """stage name -> the latest run of that stage nested under ``parent`` (this pipeline run)."""
    if not parent:
        return {}
    runs = client.search_runs(
        [exp_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}'",
        order_by=["attributes.start_time ASC"],
    )
    return {r.data.tags["stage"]: r.info.run_id for r in runs if "stage" in r.data.tags}


def _child_named(client, exp_id: str, parent: str, name: str):  # noqa: ANN001, ANN202 - MlflowClient, Run
    runs = client.search_runs(
        [exp_id],
        filter_string=f"tags.`mlflow.parentRunId` = '{parent}' and attributes.run_name = '{name}'",
        max_results=1,
    )
    return runs[0] if runs else None


def log_model_runs(params: Params, layout: Layout) -> dict:
    """One MLflow run per model with its params and metrics; sparse checkpoints registered (module doc).

    Call inside the report stage's MLflow run (it is the fallback parent); returns the run id per model,
    the registered version per sparse model and the model each ``best_<sparsity>`` alias points at.
    """
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    active = mlflow.active_run()
    if active is None:
        raise RuntimeError("log_model_runs runs inside the report stage's MLflow run")
    client = MlflowClient()
    exp_id = active.info.experiment_id
    r = layout.reports
    evaluation = _read(r / "eval.json", {})
    evaluated = {m["name"]: m for m in (evaluation.get("models", []) if isinstance(evaluation, dict) else [])}
    attacks = _read(r / "attack.json", [])
    prune, sds, soup = _read(r / "prune.json", {}), _read(r / "sds.json", {}), _read(r / "soup.json", {})
    stage_runs = _stage_runs(client, exp_id, active.data.tags.get("mlflow.parentRunId"))
    runs: dict[str, str] = {}
    registered: dict[str, str] = {}
    best: dict[str, tuple[float, str, str]] = {}  # sparsity -> (accuracy, model, version)
    rm_name = registered_name(params)
    for model in all_models(params, layout):
        name, kind = model["name"], model["kind"]
        if name not in evaluated:
            continue  # not evaluated (yet): nothing to show
        parent = stage_runs.get(STAGE_OF[kind], active.info.run_id)
        metrics = model_metrics(model, evaluated[name], attacks, prune, sds)
        logged = model_params(params, model, prune, soup)
        run = _child_named(client, exp_id, parent, name) if kind == "pruned" else None  # prune's own run
        if run is None:
            run = client.create_run(exp_id, run_name=name, tags={"mlflow.parentRunId": parent})
            have: set[str] = set()
        else:
            have = set(run.data.params)
        run_id = run.info.run_id
        tags = {MODEL_TAG: name, "kind": kind, "method": model["method"], "sparsity": model["sparsity"]}
        tags["stage"] = STAGE_OF[kind] if parent != active.info.run_id else "report"
        sparse = kind in REGISTERED_KINDS and "accuracy" in metrics
        model_id = _external_model(params, layout, model, run_id, exp_id, logged) if sparse else None
        now = int(time.time() * 1000)
        items = [Param(k, v) for k, v in logged.items() if k not in have]
        for i in range(0, max(len(items), 1), 100):  # MLflow takes at most 100 params per batch
            client.log_batch(  # metrics with model_id: they are the run's and the logged model's
                run_id,
                metrics=[Metric(k, v, now, 0, model_id=model_id) for k, v in metrics.items()]
                if i == 0
                else [],
                params=items[i : i + 100],
                tags=[RunTag(k, str(v)) for k, v in tags.items()] if i == 0 else [],
            )
        runs[name] = run_id
        if model_id is not None:
            version = mlflow.register_model(
                f"models:/{model_id}",
                rm_name,
                tags={**_own(client.get_logged_model(model_id).tags), **tags},
            )
            registered[name] = str(version.version)
            acc = metrics["accuracy"]
            if model["sparsity"] not in best or acc > best[model["sparsity"]][0]:
                best[model["sparsity"]] = (acc, name, str(version.version))
        if run.info.status != "FINISHED":
            client.set_terminated(run_id, "FINISHED")
    aliases = {}
    for sparsity, (_, name, version) in best.items():
        client.set_registered_model_alias(rm_name, alias_for(sparsity), version)
        aliases[alias_for(sparsity)] = name
    return {"runs": runs, "registered": registered, "aliases": aliases, "registered_model": rm_name}


def _own(tags: Mapping[str, str]) -> dict[str, str]:
    return {k: v for k, v in tags.items() if not k.startswith("mlflow.")}


def _external_model(
    params: Params, layout: Layout, model: Mapping, run_id: str, exp_id: str, logged: Mapping[str, str]
) -> str:
    """An external MLflow logged model for a checkpoint DVC holds: its path and hashes as tags, no weights."""
    import mlflow

    path = Path(model["path"])
    out, out_hash = _dvc_out(layout, path)
    tags = {
        "dvc.path": path.resolve().relative_to(layout.root).as_posix(),
        "dvc.out": out,
        "dvc.out_md5": out_hash,
        "weights.sha256": model_digest(path),
        "seed": str(params.seed),
    }
    lm = mlflow.create_external_model(
        name=logged_model_name(model["name"]),
        source_run_id=run_id,
        tags=tags,
        params=dict(logged),
        model_type=f"robustprune-{model['kind']}",
        experiment_id=exp_id,
    )
    return lm.model_id

"""What every task shares: the project layout, MLflow logging, content hashes for cache keys."""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from plumbing.mlflow_store import PARENT_ENV, tracking_uri
from robustprune.config import FINETUNED_NAME, Params, combo_label, load_params, sparsity_label
from robustprune.layout import RESOURCES_ENV, Layout  # noqa: F401  (re-exported: tasks import them from here)

log = logging.getLogger("robustprune")


def all_models(params: Params, layout: Layout) -> list[dict]:
    """Every model the pipeline produces, in report order: the one list evaluate, attack and report share.

    Each entry: ``name`` (as in the report and ``attack.models``), ``kind`` (finetuned | variant | soup | pruned |
    sds | cap; ``finetuned`` is the classifier ``model.finetuned`` gave), ``method`` (``dense`` for variants and soups), ``sparsity`` (a label: ``0``, ``0.875``, ``2:4``) and
    ``path`` (a saved Hugging Face directory).
    """

    def entry(name: str, kind: str, method: str, sparsity: str, path: Path) -> dict:
        return {"name": name, "kind": kind, "method": method, "sparsity": sparsity, "path": str(path)}

    out = []
    if params.dense_source == "finetuned":  # the classifier you gave, materialised by the finetune stage
        out.append(entry(FINETUNED_NAME, "finetuned", "dense", "0", layout.finetuned / FINETUNED_NAME))
    out += [entry(n, "variant", "dense", "0", layout.finetuned / n) for n in params.ingredient_names()]
    out += [
        entry(n, "soup", "dense", "0", layout.soup / n.removeprefix("soup-")) for n in params.soup_names()
    ]
    out += [
        entry(combo_name(m, s), "pruned", m, s, layout.pruned_model(m, s)) for m, s in params.prune.combos
    ]
    out += [
        entry(f"sds-{combo_name(m, s)}", "sds", f"sds+{m}", s, layout.sds / f"sds-{combo_name(m, s)}")
        for m, s in params.sds.combos
    ]
    cap = params.cap
    out += [
        entry(
            f"{run}_{sparsity_label(s)}",
            "cap",
            run,
            sparsity_label(s),
            layout.cap / f"{run}_{sparsity_label(s)}",
        )
        for run, _ in cap.runs
        for s in cap.sparsities
    ]
    if cap.structured.sparsities:
        s = sparsity_label(cap.structured.sparsities[-1])
        out.append(entry(f"cap-f_{s}", "cap", "cap-f", s, layout.cap / f"cap-f_{s}"))
    return out


def label_names(layout: Layout) -> list[str]:
    """The data's label names in id order (``data/prepared/labels.json``, written by the prepare stage)."""
    import json

    from robustprune.data import LABELS_FILE

    return [str(n) for n in json.loads((layout.data / LABELS_FILE).read_text())["label_names"]]


def best_ingredient(layout: Layout) -> str | None:
    """The soup's top-ranked ingredient (``reports/soup.json``), or None before the soup stage ran."""
    import json

    path = layout.reports / "soup.json"
    return json.loads(path.read_text()).get("best_ingredient") if path.is_file() else None


def combo_name(method: str, sparsity: str | float) -> str:
    """File-system name of a (method, sparsity) pair: ``sparsegpt_0.5``, ``sparsegpt_2-4``."""
    return combo_label(method, sparsity)


def load(params_path: str | Path, root: str | Path | None = None) -> tuple[Params, Layout]:
    root = Path(root) if root is not None else Path.cwd()
    return load_params(params_path), Layout(root.resolve())


def sha256_files(*paths: str | Path, chunk: int = 1 << 20) -> str:
    """One hash over files (directories: every file inside, sorted by relative path)."""
    h = hashlib.sha256()
    for p in map(Path, paths):
        files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(p) if p.is_dir() else f.name).encode())
            with open(f, "rb") as fh:
                while block := fh.read(chunk):
                    h.update(block)
    return h.hexdigest()


def code_digest(*modules: str) -> str:
    """Hash of the source a cached result depends on: each dotted module's file, or every ``.py`` file of a
    package (``"robustprune.pruning"``), by name and content. Every task's cache key uses this one helper."""
    import importlib

    h = hashlib.sha256()
    for name in modules:
        path = Path(importlib.import_module(name).__file__ or "")
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for f in files:
            h.update(f"{name}:{f.relative_to(path.parent).as_posix()}".encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def model_digest(model_dir: str | Path) -> str:
    """Content hash of a saved model's weights (cheap relative to evaluating it)."""
    d = Path(model_dir)
    files = sorted(d.glob("*.safetensors")) + [d / "config.json"]
    return sha256_files(*[f for f in files if f.exists()])


# --------------------------------------------------------------------------------------------- MLflow
#: experiment tags set when the experiment is created (or found without them). MLflow 3's UI reads
#: ``mlflow.experimentKind`` to open an experiment in its model-training view ("custom_model_development")
#: rather than the GenAI one (traces, evaluations) it assumes for an experiment without the tag.
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


def mlflow_setup(params: Params, root: Path) -> str:
    """Point MLflow at the project's tracking store and experiment; returns the experiment id.

    A local store (sqlite, a database) keeps artifacts in ``<root>/mlartifacts``; against a tracking server
    (``http(s)://``, Databricks) the experiment's artifact location is the server's to choose
    (``mlflow server --artifacts-destination``), so no path of this host ends up in it.
    """
    import mlflow

    from robustprune.config import mlflow_uri_kind

    uri = tracking_uri(params, root)
    mlflow.set_tracking_uri(uri)
    exp = mlflow.get_experiment_by_name(params.runtime.experiment)
    if exp is None:
        location = None  # a server chooses it
        if mlflow_uri_kind(uri) not in ("http", "https", "databricks", "databricks-uc"):
            location = (root / "mlartifacts").resolve().as_uri()
        exp_id = mlflow.create_experiment(
            params.runtime.experiment, artifact_location=location, tags=EXPERIMENT_TAGS
        )
    else:
        exp_id = exp.experiment_id
        for key, value in EXPERIMENT_TAGS.items():  # made before the tag existed (a user's own choice stays)
            if key not in exp.tags:
                mlflow.MlflowClient().set_experiment_tag(exp_id, key, value)
    return exp_id


def child_run(name: str, tags: Mapping[str, str] | None = None) -> Any:
    """``mlflow.start_run`` nested under the active run, in the active run's experiment.

    ``start_run(nested=True)`` alone puts the child in the *active experiment*, which is MLflow's ``Default``
    unless something set it: the per-(method, sparsity) prune runs landed there, apart from their parent.
    """
    import mlflow

    parent = mlflow.active_run()
    if parent is None:
        raise RuntimeError(f"child run {name!r}: no active MLflow run to nest under")
    return mlflow.start_run(
        run_name=name, nested=True, experiment_id=parent.info.experiment_id, tags=dict(tags or {})
    )


@contextmanager
def stage_run(
    stage: str, params: Params, root: Path, logged_params: Mapping[str, Any] | None = None
) -> Iterator[Any]:
    """An MLflow run for one stage, nested under the pipeline's parent run when there is one."""
    import mlflow

    exp_id = mlflow_setup(params, root)
    tags = {"stage": stage, "seed": str(params.seed)}
    nested = mlflow.active_run() is not None
    if not nested and os.environ.get(PARENT_ENV):  # a stage process under a pipeline run started elsewhere
        tags["mlflow.parentRunId"] = os.environ[PARENT_ENV]
    with mlflow.start_run(run_name=stage, nested=nested, experiment_id=exp_id, tags=tags) as run:
        if logged_params:
            mlflow.log_params({k: _param_str(v) for k, v in flatten(logged_params).items()})
        yield run


def _param_str(v: Any) -> str:
    s = str(v)
    return s if len(s) <= 500 else s[:497] + "..."


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def section(params: Params, *names: str) -> dict[str, Any]:
    """Params sections (or dotted keys) as a plain dict, for logging exactly what a stage reads."""
    dumped = params.model_dump(mode="json")
    out: dict[str, Any] = {}
    for name in names:
        node: Any = dumped
        for part in name.split("."):
            node = node[part]
        out[name] = node
    return out


def log_metrics(metrics: Mapping[str, float], step: int | None = None) -> None:
    import mlflow

    clean = {k.replace(":", "-"): float(v) for k, v in metrics.items() if isinstance(v, int | float)}
    if clean:
        mlflow.log_metrics(clean, step=step)


def publish_models(layout: Layout, stage: str, names: Iterable[str], report: Any) -> None:
    """A model stage's outputs: ``models/<stage>`` holds exactly ``names`` (created even when empty, DVC tracks
    it) and their ``index.json``; the stage's report goes to ``reports/<stage>.json`` and to MLflow."""
    import mlflow

    from robustprune.checkpoints import keep_only_dirs, write_json

    names = sorted(set(names))
    models = layout.root / "models" / stage
    models.mkdir(parents=True, exist_ok=True)
    keep_only_dirs(models, names)
    write_json(models / "index.json", names)
    write_json(layout.reports / f"{stage}.json", report)
    mlflow.log_artifact(str(layout.reports / f"{stage}.json"), artifact_path=stage)

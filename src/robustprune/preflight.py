"""Checks that need more than the schema: do the inputs the params name exist, make sense and answer?

Run by ``python -m flows.<stage>`` (flows/_cli.py) after params.yaml validated and before anything heavy
is imported or any output touched, so that bad input costs seconds and leaves the tree as it was. Every
problem is one line that names the key, the value and what is wrong or allowed; independent checks all
run, so a params file with three problems gets three lines.

What is checked (docs/reliability.md has the table):

- data: a local table is read, its label column must be a classification target
  (:func:`robustprune.data.check_classification_target`) and the splits must fit;
- model / attack MLM / LM directories: ``config.json`` is a JSON object with a ``model_type``, a weights
  file with a readable header and tokenizer files are there;
- ``model.finetuned`` / ``soup.ingredients`` (local directories): the same, and a sequence classifier with the
  data's number of labels and label names, every ingredient of one architecture (robustprune.own_model);
- ``runtime.device: cuda``: a CUDA device is visible here;
- ``runtime.mlflow_uri``: the file store (a path or ``file:``) only with ``MLFLOW_ALLOW_FILE_STORE=true``
  (MLflow 3 refuses it otherwise), a sqlite database's directory exists;
- ``runtime.work_pool``: the Prefect API answers, the pool exists and has an online worker, and every
  deployment the pipeline sends there exists (:func:`check_work_pool`, plain HTTP with a time budget);
- a single stage's inputs (the data/ and models/ deps dvc.yaml lists for it) exist.

No Prefect, MLflow or DVC import: the caller passes the Prefect API address and the deployment names.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from robustprune.config import Params, mlflow_uri_kind

# what robustprune.attacks.bundle.load_bundle reads from models/attack
ATTACK_BUNDLE_FILES = ("vectors.npz", "pos.json", "stopwords.txt", "lookalikes.json", "encoder")
WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "vocab.json",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
)
# stages that run a model on runtime.device in this process
DEVICE_STAGES = ("pipeline", "finetune", "soup", "prune", "sds", "evaluate", "attack", "lm")
TRUE_VALUES = ("1", "true", "yes", "on")


class PreflightError(ValueError):
    """The params are well-formed but the inputs they name are unusable; one line per problem."""


@dataclass(frozen=True)
class PrefectApi:
    """Where the Prefect API is (None: not configured, Prefect would start a temporary local server)."""

    url: str | None
    headers: Mapping[str, str] = field(default_factory=dict)


def preflight(
    params: Params,
    root: Path,
    stage: str = "pipeline",
    *,
    prefect_api: PrefectApi | None = None,
    remote_deployments: Sequence[str] = (),
    stage_inputs: Sequence[str] | None = None,
    timeout: float = 4.0,
) -> None:
    """Raise PreflightError with one line per problem.

    ``remote_deployments``: the ``flow/deployment`` names the pipeline sends to ``runtime.work_pool``;
    ``stage_inputs``: paths under ``root`` a single stage reads (None: not checked).
    """
    root = Path(root)
    checks: list[Callable[[], list[str]]] = [lambda: _check_mlflow(params, root)]
    if stage in DEVICE_STAGES:
        checks.append(lambda: _check_device(params))
    if stage in ("pipeline", "prepare"):
        checks += [lambda: _check_data(params), lambda: _check_builtins(params)]
        if params.model.kind == "local" and params.dense_source == "finetune":
            checks.append(lambda: check_model_dir(Path(params.model.name), "model.name"))
    if stage in ("pipeline", "prepare", "finetune") and params.dense_source != "finetune":
        checks.append(lambda: _check_given_models(params, root))
    if stage in ("pipeline", "attack_resources"):
        mlm = params.attack.resources.mlm
        if mlm != "train" and (mlm.startswith((".", "/", "~")) or Path(mlm).exists()):
            checks.append(lambda: check_model_dir(Path(mlm).expanduser(), "attack.resources.mlm"))
    if stage == "attack":
        checks.append(lambda: _check_bundle(root / "models" / "attack"))
    if stage == "lm":
        checks.append(lambda: _check_lm(params))
    if stage_inputs:
        checks.append(lambda: _check_inputs(root, stage, stage_inputs))
    if stage == "pipeline" and params.runtime.work_pool:
        checks.append(
            lambda: check_work_pool(
                prefect_api or PrefectApi(None), params.runtime.work_pool, remote_deployments, timeout=timeout
            )
        )
    problems = [p for check in checks for p in check()]
    if problems:
        raise PreflightError("\n".join(problems))


# ------------------------------------------------------------------------------------------ data
def _check_data(params: Params) -> list[str]:
    cfg = params.data
    if cfg.kind != "file":
        return []
    from robustprune.data import DataError, LabelError, load_table, make_splits

    try:
        df, names = load_table(Path(cfg.source), cfg.text_column, cfg.label_column)
        make_splits(
            df,
            names,
            validation_size=cfg.validation_size,
            test_size=cfg.test_size,
            seed=params.seed,
            max_train_examples=cfg.max_train_examples,
        )
    except LabelError as e:
        return [f"data.label_column = {cfg.label_column!r} (in {cfg.source}): {e}"]
    except DataError as e:
        return [f"data.source = {cfg.source!r}: {e}"]
    return []


def _check_builtins(params: Params) -> list[str]:
    names = {params.data.source if params.data.kind == "builtin" else None}
    if params.dense_source == "finetune":  # model.name is not read when the dense models are given
        names.add(params.model.name if params.model.kind == "builtin" else None)
    names.discard(None)
    if not names:
        return []
    from robustprune.resources import ResourceError, find_wheel

    out = []
    for name in sorted(names):  # type: ignore[type-var]
        try:
            find_wheel(name)
        except ResourceError as e:
            out.append(str(e))
    return out


# ------------------------------------------------------------------------------------ model dirs
def check_model_dir(directory: Path, key: str) -> list[str]:
    """A Hugging Face model directory that ``from_pretrained`` can load: config, weights, tokenizer."""
    where = f"{key} = {str(directory)!r}"
    if not directory.is_dir():
        return [f"{where}: no such directory (a hub name, or a directory saved by save_pretrained)"]
    cfg = directory / "config.json"
    if not cfg.is_file():
        return [f"{where}: no config.json (use a directory saved by save_pretrained)"]
    try:
        config = json.loads(cfg.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"{where}: config.json is not valid JSON ({e})"]
    if not isinstance(config, dict) or not config.get("model_type"):
        return [f"{where}: config.json has no 'model_type' (transformers cannot tell the architecture)"]
    problems = []
    weights = [directory / f for f in WEIGHT_FILES if (directory / f).is_file()]
    if not weights:
        problems.append(f"{where}: no weights file (one of {list(WEIGHT_FILES)})")
    elif weights[0].suffix == ".safetensors" and (err := safetensors_problem(weights[0])):
        problems.append(f"{where}: {weights[0].name} is unreadable: {err}")
    if not any((directory / f).is_file() for f in TOKENIZER_FILES):
        problems.append(f"{where}: no tokenizer files (one of {list(TOKENIZER_FILES)})")
    return problems


def data_label_names(params: Params, root: Path) -> list[str] | None:
    """The data's label names as the prepare stage will number them, or None when not known before it runs
    (a hub data set offline, or a table the data check refuses)."""
    from robustprune import data as rp_data

    cfg = params.data
    if cfg.kind == "builtin":
        return list(rp_data.ROTTEN_TOMATOES_LABELS)
    if cfg.kind == "file":
        try:
            return list(rp_data.load_table(Path(cfg.source), cfg.text_column, cfg.label_column)[1])
        except (rp_data.DataError, rp_data.LabelError, OSError):
            return None  # _check_data says why
    labels = root / "data" / "prepared" / rp_data.LABELS_FILE
    try:
        return [str(n) for n in json.loads(labels.read_text(encoding="utf-8"))["label_names"]]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _check_given_models(params: Params, root: Path) -> list[str]:
    """model.finetuned / soup.ingredients: saved classifiers with weights, the data's labels, one architecture."""
    from robustprune.own_model import classifier_problems, read_config, same_architecture_problems

    if params.model.finetuned is not None:
        given = [("model.finetuned", params.model.finetuned)]
    else:
        given = [
            (f"soup.ingredients.{i}", path) for i, (_, path) in enumerate(params.soup.ingredient_entries)
        ]
    local = [(key, Path(v).expanduser()) for key, v in given if Path(v).expanduser().exists()]
    problems = [p for key, d in local for p in check_model_dir(d, key)]
    if problems:
        return problems
    labels = data_label_names(params, root)
    for key, d in local:
        try:
            config = read_config(d)
        except (OSError, ValueError) as e:
            problems.append(f"{key} = {str(d)!r}: config.json cannot be read ({e})")
            continue
        problems += classifier_problems(config, labels, f"{key} = {str(d)!r}")
    if not problems:
        problems += same_architecture_problems(local)
    return problems


def safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read (its header and size), or None; reads the header only."""
    size = path.stat().st_size
    try:
        with path.open("rb") as f:
            head = f.read(8)
            if len(head) < 8:
                return f"{size} bytes, shorter than a safetensors header"
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                return f"header length {n} exceeds the file size {size}"
            header = json.loads(f.read(n))
    except (UnicodeDecodeError, json.JSONDecodeError, OSError) as e:
        return f"header is not JSON ({e})"
    if not isinstance(header, dict):
        return "header is not a JSON object"
    ends = [v["data_offsets"][1] for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)]
    if ends and 8 + n + max(ends) > size:
        return f"truncated: tensors end at byte {8 + n + max(ends)} of a {size}-byte file"
    return None


def _check_bundle(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []  # a missing directory is reported by the stage-input check
    missing = [f for f in ATTACK_BUNDLE_FILES if not (directory / f).exists()]
    if missing:
        return [
            f"attack resources {str(directory)!r} are incomplete (missing {missing}): "
            "run the attack_resources stage again (python -m flows.attack_resources)"
        ]
    return []


def _check_lm(params: Params) -> list[str]:
    cfg = params.lm
    out = []
    if Path(cfg.model).exists() or cfg.model.startswith((".", "/")):
        out += check_model_dir(Path(cfg.model), "lm.model")
    if Path(cfg.text).is_file():
        raw = Path(cfg.text).read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            out.append(
                f"lm.text = {cfg.text!r}: not UTF-8 text (byte {raw[e.start]:#04x} at offset {e.start})"
            )
        else:
            if not text.strip():
                out.append(f"lm.text = {cfg.text!r}: the file is empty")
    return out


def _check_inputs(root: Path, stage: str, inputs: Sequence[str]) -> list[str]:
    missing = [p for p in inputs if not (root / p).exists()]
    if not missing:
        return []
    return [
        f"stage {stage!r} needs {missing}, which do not exist under {root.resolve()}: "
        "run the upstream stages first (dvc repro, or python -m flows.pipeline)"
    ]


def stage_inputs(dvc_yaml: Path, stage: str) -> list[str] | None:
    """The data/ and models/ dependencies dvc.yaml lists for ``stage`` (None: no dvc.yaml or no such stage)."""
    if not dvc_yaml.is_file():
        return None
    import yaml

    spec = (yaml.safe_load(dvc_yaml.read_text()) or {}).get("stages", {}).get(stage)
    if not isinstance(spec, dict):
        return None
    deps = [d if isinstance(d, str) else next(iter(d)) for d in spec.get("deps", [])]
    return [d for d in deps if d.split("/", 1)[0] in ("data", "models")]


# ---------------------------------------------------------------------------------------- device
def _check_device(params: Params) -> list[str]:
    if params.runtime.device != "cuda" or cuda_visible():
        return []
    return [
        "runtime.device = 'cuda': no CUDA device is visible on this machine; use 'auto' (CUDA when present, "
        "else CPU: with runtime.work_pool the worker's GPU) or 'cpu'"
    ]


def cuda_visible() -> bool:
    """Whether torch sees a CUDA device; without an NVIDIA driver, answered without importing torch."""
    if sys.platform.startswith("linux") and not any(
        Path(p).exists() for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl")
    ):
        return False
    import torch

    return bool(torch.cuda.is_available())


# ---------------------------------------------------------------------------------------- MLflow
def _check_mlflow(params: Params, root: Path) -> list[str]:
    uri = params.runtime.mlflow_uri
    kind = mlflow_uri_kind(uri)
    key = f"runtime.mlflow_uri = {uri!r}"
    if kind == "file" and os.environ.get("MLFLOW_ALLOW_FILE_STORE", "").lower() not in TRUE_VALUES:
        return [
            f"{key}: MLflow 3 refuses a file store (a path or file: URI) unless MLFLOW_ALLOW_FILE_STORE=true; "
            "use sqlite:///mlruns.db (the default) or set that variable"
        ]
    if kind == "sqlite":
        path = urllib.parse.unquote(uri.split("://", 1)[1].removeprefix("/")) if "://" in uri else ""
        if path and path != ":memory:":
            db = Path(path) if path.startswith("/") else root / path
            if not db.parent.is_dir():
                return [f"{key}: the directory {str(db.parent)!r} of the sqlite database does not exist"]
    return []


# --------------------------------------------------------------------------------------- Prefect
def check_work_pool(
    api: PrefectApi, pool: str, deployments: Sequence[str] = (), *, timeout: float = 4.0
) -> list[str]:
    """Problems that would stop a run sent to work pool ``pool``: unreachable API, no pool, no online
    worker, missing deployments (``flow/deployment`` names). Plain HTTP; all requests share ``timeout``.
    """
    key = f"runtime.work_pool = {pool!r}"
    if not api.url:
        return [
            f"{key}: no Prefect API is configured (PREFECT_API_URL is unset), so no worker can serve the pool; "
            "start a server (prefect server start), set PREFECT_API_URL and start a worker "
            f"(prefect worker start --pool {pool}), or set runtime.work_pool: null to run in-process"
        ]
    deadline = time.monotonic() + timeout
    base = api.url.rstrip("/")

    def call(method: str, path: str, body: object | None = None) -> tuple[int, object]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"no answer within {timeout:g} s")
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json", **api.headers}
        req = urllib.request.Request(base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=left) as resp:
                return resp.status, json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as e:
            return e.code, None

    try:
        status, _ = call("GET", "/health")
        if status != 200:
            return [f"{key}: the Prefect API at {base} answered HTTP {status} to /health"]
        status, info = call("GET", f"/work_pools/{urllib.parse.quote(pool, safe='')}")
        if status == 404:
            return [
                f"{key}: the Prefect API at {base} has no work pool {pool!r}; create it "
                f"(prefect work-pool create {pool} --type process) and start a worker on a CUDA host"
            ]
        if status != 200:
            return [f"{key}: reading the pool from the Prefect API at {base} gave HTTP {status}"]
        problems = []
        if isinstance(info, dict) and info.get("is_paused"):
            problems.append(f"{key}: the work pool is paused (prefect work-pool resume {pool})")
        status, workers = call("POST", f"/work_pools/{urllib.parse.quote(pool, safe='')}/workers/filter", {})
        online = [w for w in workers or [] if isinstance(w, dict) and w.get("status") == "ONLINE"]
        if not online:
            problems.append(
                f"{key}: no online worker serves the pool ({len(workers or [])} known, none online); "
                f"start one on a CUDA host: prefect worker start --pool {pool}"
            )
        for name in deployments:
            status, dep = call("GET", f"/deployments/name/{urllib.parse.quote(name, safe='/')}")
            if status == 404:
                problems.append(
                    f"{key}: deployment {name!r} does not exist; register it (prefect deploy --all)"
                )
            elif status == 200 and isinstance(dep, dict) and dep.get("work_pool_name") not in (None, pool):
                problems.append(
                    f"{key}: deployment {name!r} runs on pool {dep.get('work_pool_name')!r}, not {pool!r}"
                )
        return problems
    except (urllib.error.URLError, OSError, TimeoutError, ValueError) as e:
        reason = getattr(e, "reason", e)
        return [
            f"{key}: the Prefect API at {base} does not answer ({reason}); start the server or fix "
            "PREFECT_API_URL, or set runtime.work_pool: null to run in-process"
        ]

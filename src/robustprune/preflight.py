"""Checks that need more than the schema: do the inputs the params name exist, make sense and answer?

Run by ``python -m flows.<stage>`` (plumbing/cli.py, through plumbing.services.preflight) after params.yaml
validated and before anything heavy is imported or any output touched, so that bad input costs seconds and
leaves the tree as it was. Every problem is one line that names the key, the value and what is wrong or
allowed; independent checks all run, so a params file with three problems gets three lines.

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
- a single stage's inputs (the paths the caller lists: the data/ and models/ deps dvc.yaml lists for it)
  exist.

The services a run talks to (the Prefect API and work pool: ``runtime.work_pool``) are checked by
:mod:`plumbing.services`; this module imports no Prefect, MLflow or DVC and talks to no service.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path

from robustprune.config import Params, mlflow_uri_kind
from robustprune.layout import Layout

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


def input_problems(
    params: Params, root: Path, stage: str = "pipeline", *, stage_inputs: Sequence[str] | None = None
) -> list[str]:
    """One line per problem with the inputs ``params`` names for ``stage`` (empty: none found).

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
        checks.append(lambda: _check_bundle(Layout(root).attack))
    if stage == "lm":
        checks.append(lambda: _check_lm(params))
    if stage_inputs:
        checks.append(lambda: _check_inputs(root, stage, stage_inputs))
    return [p for check in checks for p in check()]


# ------------------------------------------------------------------------------------------ data
def _check_data(params: Params) -> list[str]:
    cfg = params.data
    if cfg.kind != "file":
        return []
    from robustprune.data import DataError, LabelError, load_table, splits_as_configured

    try:
        df, names = load_table(Path(cfg.source), cfg.text_column, cfg.label_column)
        splits_as_configured(df, names, cfg, params.seed)
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
    labels = Layout(root).data / rp_data.LABELS_FILE
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

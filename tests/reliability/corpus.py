"""A table of malformed inputs: params files, data files, model directories, attack resources, stage inputs.

Each :class:`Case` builds its files under a fresh directory (from the tiny project's valid params, data
and model) and names what the one-line error must contain: the key at fault and what is wrong. The
reliability suite runs every case through ``plumbing.cli.validate_or_exit`` (the code behind
``python -m flows.<stage>``) and a few through the real command; ``benchmarks/chaos.py --corpus`` times
them all as real commands.
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.conftest import synthetic_reviews, tiny_bert, tiny_llama, tiny_tokenizer

Builder = Callable[[Path, dict[str, Any]], "bytes | dict[str, Any] | None"]


@dataclass(frozen=True)
class Case:
    name: str
    build: Builder  # (case dir, a copy of the valid params) -> params bytes, params dict, or None (dir given)
    expected: tuple[str, ...]  # substrings of the error: the key and what is wrong
    stage: str = "pipeline"
    needs: str = ""  # "api": a live Prefect API; "no-cuda": a machine without CUDA
    env: dict[str, str | None] = field(default_factory=dict)
    params_name: str = "params.yaml"


# ----------------------------------------------------------------------------------------- the base
def write_base(base: Path) -> None:
    """The valid ingredients every case starts from: a tiny BERT directory and a reviews CSV."""
    model = base / "tiny-bert"
    tok = tiny_tokenizer(model)
    tiny_bert().bert.save_pretrained(model)
    tok.save_pretrained(model)
    with (base / "reviews.csv").open("w") as f:
        f.write("sentence,sentiment\n")
        for text, label in synthetic_reviews(240):
            f.write(f"{text},{'pos' if label else 'neg'}\n")


def base_params(base: Path) -> dict[str, Any]:
    return {
        "seed": 0,
        "data": {
            "source": str(base / "reviews.csv"),
            "text_column": "sentence",
            "label_column": "sentiment",
            "validation_size": 40,
            "test_size": 40,
            "max_length": 16,
        },
        "model": {"name": str(base / "tiny-bert")},
        "runtime": {"device": "cpu", "progress": False},
    }


def materialise(case: Case, base: Path, case_dir: Path) -> Path:
    """Write the case's files under ``case_dir``; returns the params path."""
    case_dir.mkdir(parents=True, exist_ok=True)
    made = case.build(case_dir, json.loads(json.dumps(base_params(base))))
    params = case_dir / case.params_name
    if isinstance(made, bytes):
        params.write_bytes(made)
    elif isinstance(made, dict):
        params.write_text(yaml.safe_dump(made, sort_keys=False))
    return params


# ------------------------------------------------------------------------------------------ helpers
def text(s: str) -> Builder:
    return lambda d, p: s.encode()


def raw(b: bytes) -> Builder:
    return lambda d, p: b


def with_(**sections: Any) -> Builder:
    """The valid params with sections replaced (a dotted name sets one key)."""

    def build(d: Path, p: dict[str, Any]) -> dict[str, Any]:
        for key, value in sections.items():
            node = p
            *parents, leaf = key.split("__")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return p

    return build


def data_file(name: str, content: bytes | str, **data: Any) -> Builder:
    def build(d: Path, p: dict[str, Any]) -> dict[str, Any]:
        path = d / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        p["data"].update({"source": str(path), **data})
        return p

    return build


def csv_rows(rows: list[tuple[str, str]], header: str = "sentence,sentiment") -> str:
    return header + "\n" + "".join(f"{t},{y}\n" for t, y in rows)


def model_dir(mutate: Callable[[Path], None], key: str = "model") -> Builder:
    """A copy of the tiny model directory, broken by ``mutate``, named by ``key`` in the params."""

    def build(d: Path, p: dict[str, Any]) -> dict[str, Any]:
        src = Path(p["model"]["name"])
        dst = d / "broken-model"
        shutil.copytree(src, dst)
        mutate(dst)
        if key == "model":
            p["model"]["name"] = str(dst)
        elif key == "mlm":
            p["attack"] = {"resources": {"mlm": str(dst)}}
        elif key == "lm":
            p["lm"] = {"model": str(dst)}
        return p

    return build


def classifier_dir(
    d: Path, name: str, *, num_labels: int = 2, intermediate: int = 40, labels: list[str] | None = None
) -> Path:
    """A tiny BERT classifier fine-tuned "elsewhere": saved with save_pretrained, with its tokenizer."""
    out = d / name
    model = tiny_bert(num_labels=num_labels, intermediate=intermediate)
    if labels is not None:
        model.config.id2label = dict(enumerate(labels))
        model.config.label2id = {n: i for i, n in enumerate(labels)}
    model.save_pretrained(out)
    tiny_tokenizer(out).save_pretrained(out)
    return out


def finetuned(mutate: Callable[[Path], None] | None = None, **kwargs: Any) -> Builder:
    """model.finetuned = a tiny classifier (``kwargs``: classifier_dir's), broken by ``mutate``."""

    def build(d: Path, p: dict[str, Any]) -> dict[str, Any]:
        path = classifier_dir(d, "my-classifier", **kwargs)
        if mutate is not None:
            mutate(path)
        p["model"]["finetuned"] = str(path)
        return p

    return build


def ingredients(*specs: dict[str, Any], mutate: Callable[[Path], None] | None = None) -> Builder:
    """soup.ingredients = tiny classifiers, one per spec (classifier_dir's kwargs); ``mutate`` breaks the first."""

    def build(d: Path, p: dict[str, Any]) -> dict[str, Any]:
        paths = [classifier_dir(d, f"run-{i}", **spec) for i, spec in enumerate(specs)]
        if mutate is not None:
            mutate(paths[0])
        p["soup"] = {"ingredients": [str(x) for x in paths]}
        return p

    return build


def _lm_dir(d: Path) -> None:
    """Replace a classifier directory's model by a tiny causal LM (its config says LlamaForCausalLM)."""
    for f in ("model.safetensors", "config.json"):
        (d / f).unlink()
    tiny_llama().save_pretrained(d)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _stage_root(make: Callable[[Path], None]) -> Builder:
    def build(d: Path, p: dict[str, Any]) -> dict[str, Any]:
        make(d / "root")
        return p

    return build


def _prepared(root: Path) -> None:
    for rel in ("data/prepared", "models/base", "models/finetuned", "data/calibration"):
        (root / rel).mkdir(parents=True, exist_ok=True)


def _attack_bundle(missing: str) -> Callable[[Path], None]:
    def make(root: Path) -> None:
        (root / "data" / "prepared").mkdir(parents=True)
        bundle = root / "models" / "attack"
        (bundle / "encoder").mkdir(parents=True)
        for f in ("vectors.npz", "pos.json", "stopwords.txt", "lookalikes.json"):
            if f != missing:
                (bundle / f).write_text("{}")

    return make


def _safetensors_header_only(path: Path) -> None:
    header = b'{"w":{"dtype":"F32","shape":[1000],"data_offsets":[0,4000]}}'
    path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)


# -------------------------------------------------------------------------------------------- cases
BALANCED = [(f"good film {i}", "pos") for i in range(30)] + [(f"bad film {i}", "neg") for i in range(30)]

CASES: list[Case] = [
    # the params file itself
    Case("params-random-bytes", raw(bytes(range(128, 256)) * 4), ("not a text file", "not UTF-8")),
    Case("params-png", raw(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64), ("not a text file", "0x89")),
    Case("params-nul-bytes", raw(b"seed: 0\n\x00\x00\x00"), ("not a text file", "NUL byte")),
    Case("params-empty", raw(b""), ("the file is empty",)),
    Case("params-blank-lines", text("\n\n   \n"), ("the file is empty",)),
    Case("params-comments-only", text("# seed: 0\n# prune: {}\n"), ("the file is empty",)),
    Case("params-yaml-syntax", text("prune: {methods: [wanda\n"), ("not valid YAML at line",)),
    Case("params-top-level-list", text("- seed\n- 0\n"), ("top level must be a mapping", "list")),
    Case("params-top-level-scalar", text("hello\n"), ("top level must be a mapping", "str")),
    Case("params-is-a-directory", lambda d, p: (d / "params.yaml").mkdir() or None, ("is a directory",)),
    Case("params-missing", lambda d, p: None, ("not found",)),
    # schema: key, value, what is allowed
    Case("unknown-section", with_(sedd=0), ("unknown key 'sedd'", "allowed keys")),
    Case("unknown-nested-key", with_(prune__methodz=["wanda"]), ("unknown key 'prune.methodz'",)),
    Case("seed-not-integer", with_(seed="zero"), ("seed", "'zero'", "integer")),
    Case("finetune-batch-zero", with_(finetune__batch_size=0), ("finetune.batch_size", "greater than 0")),
    Case("finetune-no-variants", with_(finetune__variants=[]), ("finetune.variants", "at least 1")),
    Case(
        "variants-duplicate",
        with_(
            finetune__variants=[{"name": "a", "learning_rate": 1e-3}, {"name": "a", "learning_rate": 2e-3}]
        ),
        ("finetune.variants", "unique", "'a'"),
    ),
    Case(
        "variant-name-slash",
        with_(finetune__variants=[{"name": "a/b", "learning_rate": 1e-3}]),
        ("finetune.variants.0.name", "'a/b'"),
    ),
    Case(
        "variant-negative-lr",
        with_(finetune__variants=[{"name": "a", "learning_rate": -1}]),
        ("finetune.variants.0.learning_rate", "-1", "greater than 0"),
    ),
    Case("prune-unknown-method", with_(prune__methods=["obs"]), ("prune.methods.0", "'obs'", "'sparsegpt'")),
    Case("prune-sparsity-above-1", with_(prune__sparsities=[1.5]), ("prune.sparsities", "1.5", "[0, 1)")),
    Case("prune-nm-inverted", with_(prune__sparsities=["4:2"]), ("prune.sparsities", "'4:2'", "0 < N < M")),
    Case("prune-sparsity-repeated", with_(prune__sparsities=[0.5, "0.5"]), ("prune.sparsities", "repeated")),
    Case("prune-modules-bad-regex", with_(prune__modules="(["), ("prune.modules", "regular expression")),
    Case("rakp-alpha-out-of-range", with_(prune__rakp={"alpha": 2}), ("prune.rakp.alpha", "2")),
    Case(
        "sds-not-a-prune-combination",
        with_(
            prune={"methods": ["wanda"], "sparsities": [0.5]},
            sds={"methods": ["wanda"], "sparsities": [0.75]},
        ),
        ("sds", "wanda@0.75", "not prune combinations"),
    ),
    Case("sds-lr-fista-diverges", with_(sds__optimizer="fista", sds__lr=50), ("sds", "lr", "50")),
    Case("attack-unknown-model", with_(attack__models=["soup-best"]), ("attack.models", "'soup-best'")),
    Case("attack-unknown-recipe", with_(attack__recipes=["pwws"]), ("attack.recipes.0", "'pwws'")),
    Case("attack-zero-examples", with_(attack__num_examples=0), ("attack.num_examples", "greater than 0")),
    Case("device-tpu", with_(runtime__device="tpu"), ("runtime.device", "'tpu'", "'cuda'")),
    # preflight: the machine, MLflow, Prefect
    Case(
        "device-cuda-without-cuda",
        with_(runtime__device="cuda"),
        ("runtime.device = 'cuda'", "no CUDA"),
        needs="no-cuda",
    ),
    Case(
        "mlflow-ftp",
        with_(runtime__mlflow_uri="ftp://host/mlruns"),
        ("runtime.mlflow_uri", "'ftp://host/mlruns'", "sqlite"),
    ),
    Case(
        "mlflow-file-store",
        with_(runtime__mlflow_uri="./mlruns"),
        ("runtime.mlflow_uri = './mlruns'", "MLFLOW_ALLOW_FILE_STORE"),
        env={"MLFLOW_ALLOW_FILE_STORE": None},
    ),
    Case(
        "mlflow-sqlite-dir-missing",
        with_(runtime__mlflow_uri="sqlite:////nonexistent-dir/mlruns.db"),
        ("runtime.mlflow_uri", "'/nonexistent-dir'", "does not exist"),
    ),
    Case(
        "work-pool-empty-name", with_(runtime__work_pool=" "), ("runtime.work_pool", "empty work pool name")
    ),
    Case(
        "work-pool-no-api",
        with_(runtime__work_pool="gpu"),
        ("runtime.work_pool = 'gpu'", "no Prefect API"),
        needs="no-api",
    ),
    Case(
        "work-pool-api-unreachable",
        with_(runtime__work_pool="gpu"),
        ("runtime.work_pool = 'gpu'", "does not answer"),
        needs="dead-api",
    ),
    Case(
        "work-pool-missing",
        with_(runtime__work_pool="nonexistent-pool"),
        ("no work pool 'nonexistent-pool'",),
        needs="api",
    ),
    Case(
        "work-pool-no-worker",
        with_(runtime__work_pool="idle-pool"),
        ("'idle-pool'", "no online worker"),
        needs="api",
    ),
    Case(
        "work-pool-no-deployments",
        with_(runtime__work_pool="busy-pool"),
        ("'busy-pool'", "deployment 'prune/prune-busy-pool' does not exist"),
        needs="api",
    ),
    # data files
    Case(
        "data-file-missing",
        with_(data__source="/nonexistent/reviews.csv"),
        ("data", "/nonexistent/reviews.csv", "does not exist"),
    ),
    Case(
        "data-text-column-missing",
        with_(data__text_column="review"),
        ("data.source", "text column 'review' not found"),
    ),
    Case(
        "data-label-column-missing",
        with_(data__label_column="stars"),
        ("data.source", "label column 'stars' not found"),
    ),
    Case(
        "data-label-3000-floats",
        data_file("floats.csv", csv_rows([(f"row {i}", f"{i * 0.731:.4f}") for i in range(3000)])),
        ("data.label_column = 'sentiment'", "3000 classes in 3000 rows", "regression"),
    ),
    Case(
        "data-label-single-class",
        data_file("one.csv", csv_rows([(f"good {i}", "pos") for i in range(60)])),
        ("data.source", "single class"),
    ),
    Case(
        "data-label-class-of-one-row",
        data_file("rare.csv", csv_rows(BALANCED + [("odd one", "meh")])),
        ("data.label_column", "fewer than 2 rows", "'meh'"),
    ),
    Case(
        "data-binary-csv", data_file("bin.csv", bytes(range(256)) * 8), ("data.source", "could not read csv")
    ),
    Case("data-empty-csv", data_file("empty.csv", b""), ("data.source", "could not read csv")),
    Case("data-header-only", data_file("head.csv", "sentence,sentiment\n"), ("data.source", "no rows")),
    Case(
        "data-too-small-for-splits",
        data_file("small.csv", csv_rows(BALANCED[:5] + BALANCED[30:35])),
        ("data.source", "validation_size", "exceed"),
    ),
    Case(
        "data-corrupt-parquet",
        data_file("d.parquet", b"PAR1 not really parquet"),
        ("data.source", "could not read parquet"),
    ),
    Case(
        "data-broken-jsonl",
        data_file("d.jsonl", '{"sentence": "a", "sentiment": 1}\n{"sentence": \n'),
        ("data.source", "could not read"),
    ),
    Case(
        "data-unsupported-suffix",
        data_file("d.xlsx", b"PK\x03\x04"),
        ("data.source", "unsupported data file"),
    ),
    # model directories
    Case("model-no-config", model_dir(lambda d: (d / "config.json").unlink()), ("model", "no config.json")),
    Case(
        "model-config-not-json",
        model_dir(lambda d: (d / "config.json").write_text("{not json")),
        ("model.name", "not valid JSON"),
    ),
    Case(
        "model-config-without-type",
        model_dir(lambda d: (d / "config.json").write_text('{"hidden_size": 32}')),
        ("model.name", "no 'model_type'"),
    ),
    Case(
        "model-no-weights",
        model_dir(lambda d: (d / "model.safetensors").unlink()),
        ("model.name", "no weights file"),
    ),
    Case(
        "model-truncated-weights",
        model_dir(lambda d: _safetensors_header_only(d / "model.safetensors")),
        ("model.name", "model.safetensors is unreadable", "truncated"),
    ),
    Case(
        "model-weights-garbage",
        model_dir(lambda d: (d / "model.safetensors").write_bytes(b"\xff" * 64)),
        ("model.name", "model.safetensors is unreadable"),
    ),
    Case(
        "model-no-tokenizer",
        model_dir(lambda d: [(d / f).unlink() for f in ("vocab.txt", "tokenizer.json") if (d / f).exists()]),
        ("model.name", "no tokenizer files"),
    ),
    # a classifier you fine-tuned (model.finetuned) or your own soup ingredients (soup.ingredients)
    Case(
        "finetuned-wrong-label-count",
        finetuned(num_labels=3),
        ("model.finetuned", "num_labels is 3", "the data has 2 labels"),
    ),
    Case(
        "finetuned-no-weights",
        finetuned(lambda d: (d / "model.safetensors").unlink()),
        ("model.finetuned", "no weights file"),
    ),
    Case(
        "finetuned-label-names-differ",
        finetuned(labels=["pos", "neg"]),
        ("model.finetuned", "id2label ['pos', 'neg']", "['neg', 'pos']"),
    ),
    Case("finetuned-causal-lm", finetuned(_lm_dir), ("model.finetuned", "a causal LM")),
    Case(
        "finetuned-bare-encoder",
        lambda d, p: {**p, "model": {**p["model"], "finetuned": p["model"]["name"]}},
        ("model.finetuned", "no sequence-classification head"),
    ),
    Case(
        "ingredients-architectures-differ",
        ingredients({}, {"intermediate": 48}),
        ("soup.ingredients.1", "not the architecture of soup.ingredients.0", "intermediate_size 48 vs 40"),
    ),
    Case(
        "ingredients-no-weights",
        ingredients({}, {}, mutate=lambda d: (d / "model.safetensors").unlink()),
        ("soup.ingredients.0", "no weights file"),
    ),
    Case(
        "ingredients-wrong-label-count",
        ingredients({"num_labels": 3}, {"num_labels": 3}),
        ("soup.ingredients.0", "num_labels is 3"),
    ),
    Case(
        "finetuned-and-ingredients",
        lambda d, p: {**finetuned()(d, p), "soup": {"ingredients": [str(classifier_dir(d, "other"))]}},
        ("model.finetuned", "soup.ingredients", "exclude each other"),
    ),
    Case(
        "finetuned-wrong-label-count-stage",
        finetuned(num_labels=3),
        ("model.finetuned", "num_labels is 3"),
        stage="finetune",
    ),
    # attack resources
    Case(
        "mlm-dir-missing",
        with_(attack__resources={"mlm": "./no-such-mlm"}),
        ("attack.resources.mlm", "no such directory"),
    ),
    Case(
        "mlm-dir-without-config",
        model_dir(lambda d: (d / "config.json").unlink(), key="mlm"),
        ("attack.resources.mlm", "no config.json"),
    ),
    Case(
        "attack-without-resources",
        _stage_root(lambda r: (r / "data" / "prepared").mkdir(parents=True)),
        ("stage 'attack' needs", "models/attack"),
        stage="attack",
    ),
    Case(
        "attack-resources-incomplete",
        _stage_root(_attack_bundle("vectors.npz")),
        ("attack resources", "missing ['vectors.npz']"),
        stage="attack",
    ),
    # a stage started before its inputs exist
    Case("prune-before-soup", _stage_root(_prepared), ("stage 'prune' needs", "models/soup"), stage="prune"),
    Case("sds-before-prune", _stage_root(_prepared), ("stage 'sds' needs", "models/pruned"), stage="sds"),
    # the causal-LM track
    Case(
        "lm-text-binary",
        lambda d, p: ({**p, "lm": {"text": str(_write(d / "speeches.txt", b"\xff\xfe" * 32))}}),
        ("lm.text", "not UTF-8"),
        stage="lm",
    ),
    Case(
        "lm-model-no-weights",
        model_dir(lambda d: (d / "model.safetensors").unlink(), key="lm"),
        ("lm.model", "no weights file"),
        stage="lm",
    ),
]


def root_of(case: Case, case_dir: Path) -> Path:
    """The project root a case runs against (its own ``root`` when it built one)."""
    return case_dir / "root" if (case_dir / "root").is_dir() else case_dir

"""evaluate: clean accuracy and measured sparsity of every model the pipeline produced.

Each model is one task whose cache key is the content hash of its weights plus the test split and the
evaluation settings, so re-running the stage after only some models changed re-evaluates only those.
"""

from __future__ import annotations

from pathlib import Path

from prefect import task
from prefect.context import TaskRunContext

from robustprune.config import Params
from robustprune.data import load_splits
from robustprune.metrics import evaluate_accuracy
from robustprune.modeling import load_classifier, load_tokenizer, measured_sparsity, resolve_device
from tasks.common import Layout, all_models, code_digest, model_digest, sha256_files


def models_to_evaluate(params: Params, layout: Layout) -> list[dict]:
    """(name, kind, method, sparsity, path) of every model, in report order."""
    return all_models(params, layout)


def _cache_key(_ctx: TaskRunContext, p: dict) -> str:
    params, layout, model = p["params"], p["layout"], p["model"]
    return (
        "eval-"
        + sha256_files(Path(model["path"]) / "model.safetensors", layout.data / "test.parquet")[:24]
        + (f"-{params.evaluate.batch_size}-{params.data.max_length}-{params.prune.modules}")
        + "-"
        + code_digest("robustprune.metrics", "robustprune.modeling", "tasks.evaluate")
    )


@task(name="evaluate-model", tags=["gpu"], cache_key_fn=_cache_key, persist_result=True, retries=1)
def evaluate_model(params: Params, layout: Layout, model: dict) -> dict:
    """Test accuracy and sparsity of one saved model."""
    splits = load_splits(layout.data)
    device = resolve_device(params.runtime.device)
    net = load_classifier(model["path"])
    tok = load_tokenizer(model["path"])
    acc = evaluate_accuracy(
        net,
        tok,
        splits.test["text"].tolist(),
        splits.test["label"].tolist(),
        batch_size=params.evaluate.batch_size,
        max_length=params.data.max_length,
        device=device,
    )
    return {
        **model,
        "accuracy": acc.accuracy,
        "correct": acc.correct,
        "total": acc.total,
        "measured_sparsity": measured_sparsity(net, params.prune.modules),
        "digest": model_digest(model["path"])[:16],
    }

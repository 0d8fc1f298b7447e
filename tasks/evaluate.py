"""evaluate: for every model the pipeline produced, in one forward pass over the test split and one over the
adversarial texts found against the dense model:

* clean test accuracy, per example (so every comparison in the report is paired), and measured sparsity;
* accuracy on *transferred* adversarial examples: the texts whose attack succeeded against the dense model
  (the pruning source, every recipe), re-scored by this model;
* representation fidelity to the dense model (robustprune.fidelity): per-layer cosine of pooled
  representations on clean test texts, and, for attacked models, clean-vs-adversarial cosine.

Each model is one task whose cache key is the content hash of its weights, the test split, the adversarial
texts, the dense reference and the code, so re-running the stage re-evaluates only what changed.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from prefect import task
from prefect.context import TaskRunContext

from robustprune.checkpoints import load_tensors, save_tensors
from robustprune.config import Params
from robustprune.data import load_splits
from robustprune.fidelity import forward_with_representations, layer_cosine, summarize_cosine
from robustprune.modeling import load_classifier, load_tokenizer, measured_sparsity, resolve_device
from robustprune.sources import source_model
from tasks.common import Layout, all_models, code_digest, model_digest, sha256_files


def models_to_evaluate(params: Params, layout: Layout) -> list[dict]:
    """(name, kind, method, sparsity, path) of every model, in report order."""
    return all_models(params, layout)


def dense_reference(params: Params, layout: Layout) -> dict:
    """The dense model that gets pruned (``soup.prune_source``), as an :func:`all_models` entry."""
    path = str(source_model(params, layout))
    return next(m for m in all_models(params, layout) if m["path"] == path)


def test_labels(layout: Layout) -> list[int]:
    """The test split's labels, in row order (eval.json keeps them beside every model's predictions)."""
    return [int(x) for x in load_splits(layout.data).test["label"]]


def read_attack_csv(path: Path) -> list[dict]:
    """Rows of a per-example attack CSV (``reports/attacks/<model>/<recipe>.csv``)."""
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def transfer_examples(layout: Layout, reference: str, recipes: list[str]) -> list[dict]:
    """Adversarial texts that fooled ``reference`` (succeeded attacks), in recipe then test-row order."""
    out = []
    for recipe in recipes:
        path = layout.reports / "attacks" / reference / f"{recipe}.csv"
        if not path.is_file():
            continue
        for r in read_attack_csv(path):
            if r["outcome"] == "succeeded":
                out.append(
                    {
                        "recipe": recipe,
                        "test_row": int(r["test_row"]),
                        "label": int(r["label"]),
                        "text": r["perturbed_text"],
                    }
                )
    return out


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def _settings(params: Params) -> dict:
    return {
        "batch_size": params.evaluate.batch_size,
        "max_length": params.data.max_length,
        "device": resolve_device(params.runtime.device),
    }


def _reference_key(_ctx: TaskRunContext, p: dict) -> str:
    params, layout, model = p["params"], p["layout"], p["model"]
    return "-".join(
        [
            "eval-ref",
            sha256_files(Path(model["path"]) / "model.safetensors", layout.data / "test.parquet")[:24],
            f"{params.evaluate.batch_size}-{params.data.max_length}",
            code_digest("robustprune.fidelity", "tasks.evaluate"),
        ]
    )


@task(name="evaluate-reference", tags=["gpu"], cache_key_fn=_reference_key, persist_result=True)
def reference_representations(params: Params, layout: Layout, model: dict) -> str:
    """The dense reference's pooled per-layer representations of the test texts, saved once."""
    test = load_splits(layout.data).test
    net, tok = load_classifier(model["path"]), load_tokenizer(model["path"])
    _, reps = forward_with_representations(net, tok, test["text"].tolist(), **_settings(params))
    dest = layout.root / ".cache" / "eval-work" / f"reference-{model_digest(model['path'])[:16]}.safetensors"
    save_tensors(dest, {"reps": reps.contiguous()})
    return str(dest)


def _cache_key(_ctx: TaskRunContext, p: dict) -> str:
    params, layout, model = p["params"], p["layout"], p["model"]
    attacked = sorted(str(f) for f in own_attack_csvs(layout, model["name"]))
    return "-".join(
        [
            "eval",
            sha256_files(Path(model["path"]) / "model.safetensors", layout.data / "test.parquet")[:24],
            f"{params.evaluate.batch_size}-{params.data.max_length}-{params.prune.modules}",
            _digest(p.get("transfer", [])),
            Path(p["reference"]).stem if p.get("reference") else "noref",
            sha256_files(*attacked)[:12] if attacked else "noattack",
            code_digest(
                "robustprune.batching", "robustprune.modeling", "robustprune.fidelity", "tasks.evaluate"
            ),
        ]
    )


def own_attack_csvs(layout: Layout, name: str) -> list[Path]:
    d = layout.reports / "attacks" / name
    return sorted(d.glob("*.csv")) if d.is_dir() else []


def bits(flags: np.ndarray) -> str:
    """Per-example correctness as a compact '0'/'1' string (JSON-friendly, paired comparisons read it)."""
    return "".join("1" if f else "0" for f in flags)


@task(name="evaluate-model", tags=["gpu"], cache_key_fn=_cache_key, persist_result=True, retries=1)
def evaluate_model(
    params: Params, layout: Layout, model: dict, transfer: list[dict], reference: str | None
) -> dict:
    """Test accuracy (per example), sparsity, transferred accuracy and fidelity of one saved model."""
    test = load_splits(layout.data).test
    settings = _settings(params)
    net, tok = load_classifier(model["path"]), load_tokenizer(model["path"])
    labels = test["label"].to_numpy()
    logits, reps = forward_with_representations(net, tok, test["text"].tolist(), **settings)
    predicted = logits.argmax(-1)
    correct = predicted == labels
    out = {
        **model,
        "accuracy": float(correct.mean()) if len(correct) else float("nan"),
        "correct": int(correct.sum()),
        "total": int(len(correct)),
        "correct_bits": bits(correct),
        "predictions": [int(x) for x in predicted],  # per test row: the degeneracy check reads them
        "measured_sparsity": measured_sparsity(net, params.prune.modules),
        "digest": model_digest(model["path"])[:16],
    }
    if transfer:
        adv_logits, _ = forward_with_representations(net, tok, [t["text"] for t in transfer], **settings)
        ok = adv_logits.argmax(-1) == np.array([t["label"] for t in transfer])
        out["transfer"] = {}
        for recipe in dict.fromkeys(t["recipe"] for t in transfer):
            sel = np.array([t["recipe"] == recipe for t in transfer])
            out["transfer"][recipe] = {
                "correct": int(ok[sel].sum()),
                "n": int(sel.sum()),
                "bits": bits(ok[sel]),
            }
        out["transfer"]["all"] = {"correct": int(ok.sum()), "n": int(len(ok)), "bits": bits(ok)}
    if reference:
        ref = load_tensors(reference)["reps"]
        out["fidelity"] = summarize_cosine(layer_cosine(reps, ref)).to_dict()
    out["adversarial_similarity"] = _adversarial_similarity(layout, model["name"], net, tok, reps, settings)
    return out


def _adversarial_similarity(layout: Layout, name: str, net, tok, reps: torch.Tensor, settings: dict) -> dict:  # noqa: ANN001
    """Per recipe this model was attacked with: mean cosine between its representation of each attacked
    clean text and of the attack's final text (succeeded and failed attacks; skipped ones have none)."""
    out = {}
    for path in own_attack_csvs(layout, name):
        rows = [r for r in read_attack_csv(path) if r["outcome"] in ("succeeded", "failed")]
        if not rows:
            continue
        _, adv = forward_with_representations(net, tok, [r["perturbed_text"] for r in rows], **settings)
        clean = reps[:, torch.as_tensor([int(r["test_row"]) for r in rows])]
        out[path.stem] = summarize_cosine(layer_cosine(adv, clean)).to_dict()
    return out

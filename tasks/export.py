"""Ship a pruned model from a finished run: its files in ``--out DIR`` and ``robustprune.json``, the record of
how it was made and what the run measured (``robustprune prune ... --out DIR``, flows/cli.py).

The record is read from what the stages wrote, never recomputed: the params (and their digest), the
calibration set (``data/calibration``: size, seed, digest), the prune stage's metrics, each pruned Linear's
measured sparsity (from the shipped weights), and the clean and attacked accuracy with their 95% intervals
from ``reports/metrics.json`` (the report stage's). The causal-LM track records perplexities
(``reports/lm.json``) instead.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from robustprune import export
from robustprune.checkpoints import read_json
from robustprune.config import FINETUNED_NAME, Params, parse_sparsity
from tasks.common import Layout, combo_name, model_digest, sha256_files


def params_digest(params: Params) -> str:
    """sha256 of the validated params (every key, defaults filled in), as canonical JSON."""
    return hashlib.sha256(json.dumps(params.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()


def _provenance(params: Params, layout: Layout) -> dict[str, Any]:
    """What a shipped record says of the run that made it: the params (digest and file) and robustprune's commit."""
    return {
        "params_digest": params_digest(params),
        "params": str(layout.root / "params.yaml"),
        "robustprune_commit": _commit(Path(__file__).resolve().parent),
    }


def _commit(root: Path) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def pattern(sparsity: str) -> dict[str, Any]:
    """The sparsity as the record states it: a target fraction, or N:M."""
    target, n, m = parse_sparsity(sparsity)
    if n is not None:
        return {"kind": "N:M", "n": n, "m": m, "sparsity": target}
    return {"kind": "unstructured", "sparsity": target}


def calibration_record(params: Params, layout: Layout) -> dict[str, Any]:
    texts = read_json(layout.calibration / "texts.json")
    stats = (
        read_json(layout.reports / "calibrate.json") if (layout.reports / "calibrate.json").is_file() else {}
    )
    return {
        "num_samples": len(texts["texts"]),
        "seed": texts["seed"],
        "source": "the training split of data.source (seeded sample)",
        "max_length": params.data.max_length,
        "batch_size": params.calibrate.batch_size,
        "num_tokens": stats.get("num_tokens"),
        "digest": sha256_files(layout.calibration / "calibration.safetensors"),
        "texts_digest": sha256_files(layout.calibration / "texts.json"),
    }


def _under_attack(metrics: dict, model: str) -> dict[str, Any]:
    """recipe -> accuracy under attack (with its interval) of ``model`` in reports/metrics.json, whose keys
    are ``<model>.<recipe>`` (model names hold dots: ``rakp_0.875``; recipes do not)."""
    out = {}
    for key, entry in metrics.get("attack", {}).items():
        name, recipe = key.rsplit(".", 1)
        if name == model:
            out[recipe] = entry.get("accuracy_under_attack")
    return out


def classifier_record(params: Params, layout: Layout, method: str, sparsity: str) -> dict[str, Any]:
    """robustprune.json of the classifier pruned with (method, sparsity) in this run."""
    from robustprune.modeling import load_classifier, prunable_linears

    name = combo_name(method, sparsity)
    model_dir = layout.pruned_model(method, sparsity)
    prune = read_json(model_dir / "metrics.json")
    metrics = read_json(layout.reports / "metrics.json")
    models = metrics["models"]
    net = load_classifier(model_dir)
    layers = export.layer_sparsity(prunable_linears(net, params.prune.modules))
    attacked = _under_attack(metrics, name)
    dense = read_json(layout.reports / "eval.json")["reference"]
    return {
        "model": name,
        "source": {
            "model": str(params.model.finetuned) if params.dense_source == "finetuned" else dense,
            "dense_reference": dense,
            "dense_digest": model_digest(layout.finetuned / FINETUNED_NAME)
            if params.dense_source == "finetuned"
            else None,
        },
        "architectures": list(net.config.architectures or []),
        "label_names": [net.config.id2label[i] for i in range(net.config.num_labels)],
        "method": method,
        "sparsity": sparsity,
        "pattern": pattern(sparsity),
        "prune": {
            **{
                k: v
                for k, v in params.prune.model_dump(mode="json").items()
                if k not in ("methods", "sparsities")
            },
            "prune_seconds": prune.get("prune_seconds"),
            "key": prune.get("key"),
        },
        "calibration": calibration_record(params, layout),
        "data": {
            "source": params.data.source,
            "test_examples": models[name]["accuracy"]["n"],
            "test_digest": sha256_files(layout.data / "test.parquet"),
        },
        "measured_sparsity": {"overall": prune["measured_sparsity"], "layers": layers},
        "accuracy": {
            "clean": models[name]["accuracy"],
            "dense_clean": models[dense]["accuracy"] if dense in models else None,
            "under_attack": attacked,
            "dense_under_attack": _under_attack(metrics, dense),
            "interval": "95% Wilson score interval (robustprune.stats.rate); k of n test examples",
            "attacked_examples": params.attack.num_examples,
        },
        **_provenance(params, layout),
    }


def ship_classifier(
    params: Params, layout: Layout, method: str, sparsity: str, out: Path, fmt: str = "safetensors"
) -> dict[str, Any]:
    """Write ``out``: the pruned classifier (as the run evaluated it, or compressed) and robustprune.json."""
    from robustprune.modeling import load_classifier, load_tokenizer, prunable_linears

    model_dir = layout.pruned_model(method, sparsity)
    record = classifier_record(params, layout, method, sparsity)
    dense_bytes = export.weight_bytes(model_dir)
    if fmt == "compressed-tensors":
        net = load_classifier(model_dir)
        targets = list(prunable_linears(net, params.prune.modules))
        record["weights"] = {"format": "compressed-tensors", "targets": len(targets)}
        export.save_compressed(net, load_tokenizer(model_dir), out, targets, sparsity, record)
    else:
        record["weights"] = {"format": "safetensors"}
        export.save_dense(model_dir, out, record)
    return _with_sizes(out, record, dense_bytes)


def _with_sizes(out: Path, record: dict[str, Any], dense_bytes: int) -> dict[str, Any]:
    """Add the weights' size on disk against the dense safetensors file to the record in ``out``."""
    from robustprune.checkpoints import write_json

    shipped = export.weight_bytes(out)
    record["weights"] |= {
        "bytes": shipped,
        "dense_bytes": dense_bytes,
        "ratio": shipped / dense_bytes if dense_bytes else None,
    }
    if record["weights"]["format"] == "compressed-tensors":
        record["weights"]["sparsity_config"] = read_json(out / "config.json")["quantization_config"][
            "sparsity_config"
        ]["format"]
    write_json(out / export.RECORD, record)
    (out / export.RECORD).chmod((out / "config.json").stat().st_mode & 0o777)
    return record


def lm_record(params: Params, layout: Layout, row: dict, dense: dict) -> dict[str, Any]:
    lm = params.lm
    protocol = Path(layout.root / "data" / "lm" / f"protocol-s{row['seed']}.safetensors")
    return {
        "model": row["name"],
        "source": {"model": lm.model},
        "method": row["method"],
        "sparsity": row["sparsity"],
        "pattern": pattern(row["sparsity"]),
        "prune": {
            **{
                k: v
                for k, v in lm.model_dump(mode="json").items()
                if k not in ("methods", "sparsities", "sds")
            },
            "prune_seconds": row.get("prune_seconds"),
        },
        "calibration": {
            "num_samples": lm.calib_chunks,
            "length": lm.calib_len,
            "seed": row["seed"],
            "source": f"lm.text = {lm.text!r} (documents not used for evaluation)",
            "digest": sha256_files(protocol) if protocol.is_file() else None,
        },
        "perplexity": {"pruned": row["ppl"], "dense": dense["ppl"], "tokens": row.get("tokens")},
        "measured_sparsity": {"overall": row["measured_sparsity"]},
        **_provenance(params, layout),
    }


def ship_lm(
    params: Params, layout: Layout, method: str, sparsity: str, out: Path, fmt: str = "safetensors"
) -> dict[str, Any]:
    """Write ``out``: the pruned causal LM (the dense model with the pruned Linears put in) + robustprune.json."""
    from robustprune.checkpoints import atomic_dir
    from robustprune.lm import load_causal_lm, load_lm_tokenizer
    from robustprune.modeling import prunable_linears
    from tasks.lm import lm_dirs, load_linears

    rows = read_json(layout.reports / "lm.json")
    dense = next(r for r in rows if r["method"] == "dense")
    row = next(
        r for r in rows if r["method"] == method and r["sparsity"] == sparsity and r.get("stage") == "prune"
    )
    source = params.lm.model if params.lm.model != "smollm2" else str(lm_dirs(layout)["dense"])
    net = load_linears(load_causal_lm(source), Path(row["work"]) / "weights.safetensors")
    tok = load_lm_tokenizer(source)
    record = lm_record(params, layout, row, dense)
    record["measured_sparsity"]["layers"] = export.layer_sparsity(prunable_linears(net))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.dense.") as tmp:
        net.save_pretrained(tmp, safe_serialization=True)  # the dense file: what the sizes compare with
        dense_bytes = export.weight_bytes(tmp)
    if fmt == "compressed-tensors":
        record["weights"] = {"format": "compressed-tensors"}
        export.save_compressed(net, tok, out, list(prunable_linears(net)), sparsity, record)
    else:
        record["weights"] = {"format": "safetensors"}
        with atomic_dir(out) as tmp:
            net.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            export.make_readable(tmp)
    return _with_sizes(out, record, dense_bytes)

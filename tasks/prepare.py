"""prepare: the data splits and the pre-trained encoder, from the offline default, a file or the hub."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from robustprune import data as rp_data
from robustprune import resources
from robustprune.checkpoints import atomic_dir
from robustprune.config import Params
from tasks.common import Layout


@task(name="prepare-data", tags=["cpu"])
def prepare_data(params: Params, layout: Layout) -> dict:
    """Load, clean and split the data; write data/prepared/{train,validation,test}.parquet."""
    cfg = params.data
    existing = None
    if cfg.kind == "builtin":
        path = resources.extract(cfg.source, layout.resources / cfg.source)
        df, names = rp_data.load_rotten_tomatoes(path), ("rotten", "fresh")
    elif cfg.kind == "file":
        df, names = rp_data.load_table(Path(cfg.source), cfg.text_column, cfg.label_column)
    else:
        frames, names = rp_data.load_hub(cfg.source, cfg.hub_config, cfg.text_column, cfg.label_column)
        df = frames.pop("train")
        existing = frames
    splits = rp_data.splits_as_configured(df, names, cfg, params.seed, existing)
    rp_data.save_splits(splits, layout.data)
    counts = {f"{k}_size": len(getattr(splits, k)) for k in ("train", "validation", "test")}
    for k in ("train", "validation", "test"):
        counts[f"{k}_positive_rate"] = float(getattr(splits, k)["label"].mean()) if len(names) == 2 else 0.0
    return {**counts, "num_labels": len(names), "label_names": list(names)}


def base_source(params: Params) -> tuple[str, str]:
    """(name or directory, kind) of what models/base holds: ``model.name``, or, when the dense models are
    given (``model.finetuned`` / ``soup.ingredients``), the encoder and tokenizer of the (first) given
    checkpoint, so that calibration tokenises with the model's own tokenizer (and CAP's pre-trained reference
    is that encoder)."""
    if params.dense_source == "finetuned":
        return str(params.model.finetuned), "finetuned"
    if params.dense_source == "ingredients":
        return params.soup.ingredient_entries[0][1], "ingredients"
    return params.model.name, params.model.kind


@task(name="prepare-model", tags=["cpu"])
def prepare_model(params: Params, layout: Layout) -> dict:
    """Materialise the pre-trained encoder as a local Hugging Face directory under models/base."""
    name, kind = base_source(params)
    if kind == "builtin":
        resources.extract(name, layout.base_model)
    else:
        from transformers import AutoModel, AutoTokenizer

        with atomic_dir(layout.base_model) as tmp:
            AutoTokenizer.from_pretrained(name).save_pretrained(tmp)
            AutoModel.from_pretrained(name).save_pretrained(tmp, safe_serialization=True)
    return {"model": name, "kind": kind}

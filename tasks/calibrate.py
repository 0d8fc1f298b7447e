"""calibrate: a seeded sample of training texts, tokenised once for every pruning run."""

from __future__ import annotations

from prefect import task

from robustprune.calibration import sample_texts, tokenize
from robustprune.checkpoints import save_tensors, write_json
from robustprune.config import Params
from robustprune.data import load_splits
from robustprune.modeling import load_tokenizer
from tasks.common import Layout


@task(name="calibrate", tags=["cpu"])
def calibrate(params: Params, layout: Layout) -> dict:
    splits = load_splits(layout.data)
    texts = sample_texts(splits.train["text"].tolist(), params.calibrate.num_samples, params.calibrate.seed)
    tok = load_tokenizer(layout.base_model)
    enc = tokenize(tok, texts, params.data.max_length)
    save_tensors(layout.calibration / "calibration.safetensors", enc)
    tokens = int(enc["attention_mask"].sum())
    write_json(layout.calibration / "texts.json", {"seed": params.calibrate.seed, "texts": texts})
    return {"num_samples": len(texts), "num_tokens": tokens, "padded_length": int(enc["input_ids"].shape[1])}

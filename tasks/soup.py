"""soup: greedy and uniform soups of the fine-tuned variants."""

from __future__ import annotations

from prefect import task

from robustprune.checkpoints import load_tensors, read_json, save_pretrained_atomic
from robustprune.config import Params
from robustprune.data import load_splits
from robustprune.metrics import evaluate_accuracy
from robustprune.modeling import load_classifier, load_tokenizer, resolve_device
from robustprune.soup import average_state_dicts, greedy_soup
from tasks.common import Layout


@task(name="soup", tags=["cpu"])
def make_soups(params: Params, layout: Layout) -> dict:
    """Greedy soup (the pruning input by default) and the uniform soup, both evaluated and saved."""
    splits = load_splits(layout.data)
    device = resolve_device(params.runtime.device)
    names = [v.name for v in params.finetune.variants]
    dirs = [layout.finetuned / n for n in names]
    tok = load_tokenizer(dirs[0])
    model = load_classifier(dirs[0])
    ev = {"batch_size": params.evaluate.batch_size, "max_length": params.data.max_length, "device": device}
    val_x, val_y = splits.validation["text"].tolist(), splits.validation["label"].tolist()
    test_x, test_y = splits.test["text"].tolist(), splits.test["label"].tolist()

    def val_acc(sd: dict) -> float:
        model.load_state_dict(sd)
        return evaluate_accuracy(model, tok, val_x, val_y, **ev).accuracy

    ingredients = []
    for n, d in zip(names, dirs, strict=True):
        sd = load_tensors(d / "model.safetensors")
        ingredients.append((n, _full_state(model, sd), read_json(d / "metrics.json")["validation_accuracy"]))
    greedy = greedy_soup(ingredients, val_acc)
    uniform_sd = average_state_dicts([sd for _, sd, _ in ingredients])
    out = {"ingredients": {n: acc for n, _, acc in ingredients}}
    for kind, sd, members, history in (
        ("greedy", greedy.state_dict, greedy.members, greedy.history),
        ("uniform", uniform_sd, names, []),
    ):
        model.load_state_dict(sd)
        val = evaluate_accuracy(model, tok, val_x, val_y, **ev).accuracy
        test = evaluate_accuracy(model, tok, test_x, test_y, **ev).accuracy
        metrics = {"validation_accuracy": val, "test_accuracy": test, "members": members, "history": history}
        save_pretrained_atomic(model, tok, layout.soup / kind, extra={"metrics.json": metrics})
        out[kind] = metrics
    return out


def _full_state(model, sd: dict) -> dict:  # noqa: ANN001
    """Saved files may omit tied or buffer tensors; fill them from a loaded model for averaging."""
    full = {k: v.clone() for k, v in model.state_dict().items()}
    missing = set(sd) - set(full)
    if missing:
        raise ValueError(f"checkpoint has tensors the model does not: {sorted(missing)[:5]}")
    full.update(sd)
    return full

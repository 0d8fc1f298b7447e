"""Bringing your own classifier (``model.finetuned``) or your own soup ingredients (``soup.ingredients``).

Checks on the ``config.json`` of a saved Hugging Face classifier, made before any work (``robustprune.preflight``)
and again when the finetune stage materialises the checkpoint (``tasks.finetune``), so a hub name that could
not be checked offline fails there with the same line:

- it is a sequence classifier (a ``...ForSequenceClassification``), not a causal LM or a bare encoder;
- its number of labels equals the data's;
- its label names (``id2label``), unless they are the generic ``LABEL_0, LABEL_1, ...``, are the data's, in
  the same order (case and surrounding blanks aside);
- soup ingredients share one architecture: the config fields that fix the weights' shapes and, when every
  ingredient has a ``model.safetensors``, the names and shapes of its tensors (read from the headers only).

The label mapping of the data is what every checkpoint the pipeline saves carries (:func:`set_label_names`).
Pure functions on dicts and paths; torch is not imported.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: config.json fields that fix the shapes of a model's weights: ingredients must agree on all of them
SHAPE_KEYS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
    "max_position_embeddings",
    "type_vocab_size",
)
_GENERIC = re.compile(r"^LABEL_(\d+)$")


class CheckpointError(ValueError):
    """A given checkpoint does not fit the data or the other checkpoints; one line that names the key."""


def read_config(directory: str | Path) -> dict[str, Any]:
    """The ``config.json`` of a saved model as a dict (ValueError when it is not a JSON object)."""
    data = json.loads((Path(directory) / "config.json").read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{directory}/config.json is not a JSON object")
    return data


def config_label_names(config: Mapping[str, Any]) -> list[str]:
    """``id2label`` in id order; transformers' defaults (``LABEL_0``, ``LABEL_1``) when it is absent."""
    id2label = config.get("id2label")
    if isinstance(id2label, Mapping) and id2label:
        return [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
    n = config.get("num_labels") or 2  # PretrainedConfig's default when neither is saved
    return [f"LABEL_{i}" for i in range(int(n))]


def generic_label_names(names: Sequence[str]) -> bool:
    """True for ``LABEL_0, LABEL_1, ...``: names a checkpoint gets when nobody gave it any."""
    return all(
        (m := _GENERIC.match(str(n))) is not None and int(m.group(1)) == i for i, n in enumerate(names)
    )


def _norm(name: str) -> str:
    return str(name).strip().casefold()


def classifier_problems(
    config: Mapping[str, Any], data_labels: Sequence[str] | None, where: str
) -> list[str]:
    """Why the classifier of ``config`` cannot be the dense model for data labelled ``data_labels``.

    ``where`` starts every line (``"model.finetuned = '/path'"``); ``data_labels`` None: not known here (a hub
    data set offline), only the head is checked.
    """
    archs = [str(a) for a in config.get("architectures") or []]
    if any(a.endswith("ForCausalLM") for a in archs):
        return [
            f"{where}: a causal LM ({', '.join(archs)}), not a sequence classifier; prune it on the causal-LM "
            "track (lm.model in params-lm.yaml, or `robustprune prune` which sends it there)"
        ]
    if archs and not any(a.endswith("ForSequenceClassification") for a in archs):
        return [
            f"{where}: architectures {archs} has no sequence-classification head; give a fine-tuned "
            "...ForSequenceClassification, or put a pre-trained encoder in model.name to fine-tune it here"
        ]
    names = config_label_names(config)
    if data_labels is None:
        return []
    data_labels = [str(n) for n in data_labels]
    if len(names) != len(data_labels):
        return [
            f"{where}: num_labels is {len(names)} (id2label {names}) but the data has {len(data_labels)} "
            f"labels {data_labels}; give a classifier trained on these labels"
        ]
    data_named = not all(n == str(i) for i, n in enumerate(data_labels))  # integer labels carry no names
    if (
        data_named
        and not generic_label_names(names)
        and [_norm(n) for n in names] != list(map(_norm, data_labels))
    ):
        return [
            f"{where}: id2label {names} does not match the data's labels {data_labels} (label id i must name "
            "the data's i-th label, sorted as in the data); relabel the data (data.label_column) or the "
            "checkpoint's id2label"
        ]
    return []


def label_mapping(label_names: Sequence[str]) -> tuple[dict[int, str], dict[str, int]]:
    """``(id2label, label2id)`` of the data's labels, as every saved checkpoint carries them."""
    names = [str(n) for n in label_names]
    return dict(enumerate(names)), {n: i for i, n in enumerate(names)}


def set_label_names(model: Any, label_names: Sequence[str]) -> Any:
    """Write the data's label mapping into ``model.config`` (in place; returns the model)."""
    id2label, label2id = label_mapping(label_names)
    model.config.id2label = id2label
    model.config.label2id = label2id
    return model


# ------------------------------------------------------------------------------------ architecture
def safetensors_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a safetensors header (the data is not read)."""
    with Path(path).open("rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(n))
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


def architecture_signature(directory: str | Path) -> dict[str, Any]:
    """What must be equal for two checkpoints to be averaged: shape-fixing config fields, label count,
    and the tensor shapes when the weights are one ``model.safetensors``."""
    d = Path(directory)
    config = read_config(d)
    sig: dict[str, Any] = {k: config.get(k) for k in SHAPE_KEYS if k in config}
    sig["architectures"] = sorted(config.get("architectures") or [])
    sig["num_labels"] = len(config_label_names(config))
    weights = d / "model.safetensors"
    if weights.is_file():
        sig["tensors"] = safetensors_shapes(weights)
    return sig


def signature_difference(a: Mapping[str, Any], b: Mapping[str, Any]) -> str | None:
    """The first difference between two signatures, in words, or None when they agree."""
    for key in ("architectures", *SHAPE_KEYS, "num_labels"):
        if (key in a or key in b) and a.get(key) != b.get(key):
            return f"{key} {b.get(key)!r} vs {a.get(key)!r}"
    ta, tb = a.get("tensors"), b.get("tensors")
    if ta is not None and tb is not None and ta != tb:
        missing = sorted(set(ta) - set(tb))
        extra = sorted(set(tb) - set(ta))
        if missing or extra:
            return f"tensors differ: {len(missing)} missing (e.g. {missing[:2]}), {len(extra)} extra (e.g. {extra[:2]})"
        name = next(k for k in sorted(ta) if ta[k] != tb[k])
        return f"tensor {name!r} has shape {list(tb[name])} vs {list(ta[name])}"
    return None


def same_architecture_problems(entries: Sequence[tuple[str, Path]]) -> list[str]:
    """One line per entry whose architecture differs from the first one's. ``entries``: (key, directory)."""
    if len(entries) < 2:
        return []
    first_key, first_dir = entries[0]
    first = architecture_signature(first_dir)
    out = []
    for key, directory in entries[1:]:
        diff = signature_difference(first, architecture_signature(directory))
        if diff:
            out.append(
                f"{key} = {str(directory)!r}: not the architecture of {first_key} ({str(first_dir)!r}): {diff} "
                "(a soup averages the weights of one architecture)"
            )
    return out

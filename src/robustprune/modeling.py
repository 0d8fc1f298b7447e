"""Loading models and finding the parts a pruner works on.

One driver prunes BERT-family encoders and Llama-family decoders: this module knows, per architecture,
where the transformer blocks live, which ``nn.Linear`` modules inside a block are prunable, and in which
order they see their inputs. Everything else (embeddings, norms, the classification or LM head) is never
pruned.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

_TRANSFORMERS_LOGGING_SET = False


@dataclass(frozen=True)
class Architecture:
    """Where a family keeps its blocks, and its Linear groups in forward order."""

    model_types: tuple[str, ...]
    block_paths: tuple[str, ...]
    groups: tuple[tuple[str, ...], ...]


ARCHITECTURES: dict[str, Architecture] = {
    "bert-encoder": Architecture(
        model_types=("bert", "roberta", "xlm-roberta", "camembert", "electra"),
        block_paths=("bert.encoder.layer", "roberta.encoder.layer", "electra.encoder.layer", "encoder.layer"),
        groups=(
            ("attention.self.query", "attention.self.key", "attention.self.value"),
            ("attention.output.dense",),
            ("intermediate.dense",),
            ("output.dense",),
        ),
    ),
    "mpnet-encoder": Architecture(
        model_types=("mpnet",),
        block_paths=("mpnet.encoder.layer", "encoder.layer"),
        groups=(
            ("attention.attn.q", "attention.attn.k", "attention.attn.v"),
            ("attention.attn.o",),
            ("intermediate.dense",),
            ("output.dense",),
        ),
    ),
    "llama-decoder": Architecture(
        model_types=("llama", "mistral", "qwen2", "qwen3"),
        block_paths=("model.layers", "layers"),
        groups=(
            ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
            ("self_attn.o_proj",),
            ("mlp.gate_proj", "mlp.up_proj"),
            ("mlp.down_proj",),
        ),
    ),
}


class UnsupportedModelError(ValueError):
    """The model's architecture is not one the pruning driver knows."""


def supported_model_types() -> list[str]:
    return sorted(t for a in ARCHITECTURES.values() for t in a.model_types)


def architecture_of(model: nn.Module) -> Architecture:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    for arch in ARCHITECTURES.values():
        if model_type in arch.model_types:
            return arch
    raise UnsupportedModelError(
        f"model_type {model_type!r} is not supported by the pruning driver; supported: {supported_model_types()}"
    )


def find_blocks(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks, in forward order."""
    arch = architecture_of(model)
    for path in arch.block_paths:
        node: nn.Module | None = model
        for part in path.split("."):
            node = getattr(node, part, None)
            if node is None:
                break
        if isinstance(node, nn.ModuleList):
            return node
    raise UnsupportedModelError(
        f"no transformer blocks found at any of {arch.block_paths} in {type(model).__name__}"
    )


def linear_groups(
    model: nn.Module, block: nn.Module, modules: str | None = None
) -> list[dict[str, nn.Linear]]:
    """Prunable Linears of one block, grouped by the order in which they see inputs.

    ``modules`` is an optional regular expression on the Linear's name inside the block
    (e.g. ``"attention"`` or ``"intermediate|output.dense"``); ``None`` selects all of them.
    """
    arch = architecture_of(model)
    named = dict(block.named_modules())
    groups = []
    for group in arch.groups:
        found = {}
        for name in group:
            mod = named.get(name)
            if isinstance(mod, nn.Linear) and (modules is None or re.search(modules, name)):
                found[name] = mod
        if found:
            groups.append(found)
    return groups


def prunable_linears(model: nn.Module, modules: str | None = None) -> dict[str, nn.Linear]:
    """Every prunable Linear of the model by its full name (``bert.encoder.layer.0.intermediate.dense``)."""
    arch = architecture_of(model)
    blocks = find_blocks(model)
    prefix = next(p for p in arch.block_paths if _get(model, p) is blocks)
    out = {}
    for i, block in enumerate(blocks):
        for group in linear_groups(model, block, modules):
            for name, lin in group.items():
                out[f"{prefix}.{i}.{name}"] = lin
    return out


def output_head(model: nn.Module, stride: int = 1) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A function (last block's hidden states (B, T, d), token mask (B, T)) -> the model's output logits.

    Everything after the blocks, and nothing else: a Llama-family causal LM's final norm and ``lm_head``
    (one row per real token, every ``stride``-th position only: the head is a 49k-wide GEMM, so a judge that
    calls it often subsamples positions), or a sequence classifier's head (BERT's pooler + classifier,
    RoBERTa/ELECTRA/MPNet's classification head on the first token; one row per sequence, ``stride``
    ignored). Eval mode: dropout is off. Used by RAKP's adaptive α with ``alpha_criterion = "output"``.
    Raises UnsupportedModelError now, before any work, for a model without such a head (a bare encoder or
    decoder, a masked-LM head).
    """
    if stride < 1:
        raise ValueError(f"output head stride must be >= 1, got {stride}")
    arch = architecture_of(model)
    base = getattr(model, getattr(model, "base_model_prefix", ""), None)
    name = type(model).__name__
    if arch is ARCHITECTURES["llama-decoder"]:
        norm, lm_head = getattr(base, "norm", None), getattr(model, "lm_head", None)
        if not isinstance(norm, nn.Module) or not isinstance(lm_head, nn.Module):
            raise UnsupportedModelError(f"{name} has no final norm + lm_head to read output logits from")

        def lm_logits(hidden: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
            keep = token_mask[:, ::stride].bool()
            return lm_head(norm(hidden[:, ::stride][keep]))

        return lm_logits
    classifier = getattr(model, "classifier", None)
    if not isinstance(classifier, nn.Module):
        raise UnsupportedModelError(
            f"{name} has no classification head to read output logits from (a sequence classifier is needed)"
        )
    if model.config.model_type == "bert":
        pooler = getattr(base, "pooler", None)
        if not isinstance(pooler, nn.Module):
            raise UnsupportedModelError(f"{name} has no pooler in front of its classifier")
        return lambda hidden, _mask: classifier(pooler(hidden))
    return lambda hidden, _mask: classifier(hidden)


def head_linears(model: nn.Module) -> dict[str, nn.Linear]:
    """A sequence classifier's head Linears by full name, in forward order (what RAKP's head refit rectifies).

    BERT: the pooler's dense layer, then the classifier; RoBERTa / XLM-R / ELECTRA / MPNet: the
    classification head's ``dense`` and ``out_proj``. Raises UnsupportedModelError for anything else (a
    causal LM's ``lm_head`` is usually tied to the input embeddings, which are never changed).
    """
    arch = architecture_of(model)
    name = type(model).__name__
    classifier = getattr(model, "classifier", None)
    if arch is ARCHITECTURES["llama-decoder"] or not isinstance(classifier, nn.Module):
        raise UnsupportedModelError(f"{name} has no sequence-classification head (refit_head needs one)")
    parts: list[tuple[str, nn.Module]] = []
    if model.config.model_type == "bert":
        pooler = getattr(getattr(model, model.base_model_prefix, None), "pooler", None)
        if not isinstance(pooler, nn.Module):
            raise UnsupportedModelError(f"{name} has no pooler in front of its classifier")
        parts.append((f"{model.base_model_prefix}.pooler", pooler))
    parts.append(("classifier", classifier))
    out = {}
    for prefix, module in parts:
        for sub, mod in module.named_modules():
            if isinstance(mod, nn.Linear):
                out[f"{prefix}.{sub}" if sub else prefix] = mod
    return out


def _get(model: nn.Module, path: str) -> object:
    node: object = model
    for part in path.split("."):
        node = getattr(node, part, None)
    return node


def measured_sparsity(model: nn.Module, modules: str | None = None) -> float:
    """Fraction of exact zeros over all prunable Linear weights."""
    zeros = total = 0
    for lin in prunable_linears(model, modules).values():
        zeros += int((lin.weight == 0).sum())
        total += lin.weight.numel()
    return zeros / max(total, 1)


def resolve_device(device: str) -> torch.device:
    """'auto' picks CUDA when present."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("runtime.device is 'cuda' but no CUDA device is visible")
    return torch.device(device)


def quiet_transformers() -> None:
    """Silence the 'some weights were newly initialised' chatter once."""
    global _TRANSFORMERS_LOGGING_SET
    if not _TRANSFORMERS_LOGGING_SET:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        _TRANSFORMERS_LOGGING_SET = True


def load_classifier(
    path: str | Path, num_labels: int | None = None, head_seed: int | None = None
) -> nn.Module:
    """A sequence classifier from a hub name or local directory.

    With ``head_seed`` the freshly initialised classification head is identical for every call, so that
    variants fine-tuned from it share one initialisation (a precondition for averaging them in a soup).
    A structurally pruned CAP-f directory is rebuilt with its recorded layer widths.
    """
    from transformers import AutoModelForSequenceClassification

    quiet_transformers()
    if is_structured(path):  # a CAP-f model: per-layer FFN widths that a plain config cannot hold
        return load_structured(path)
    kwargs = {} if num_labels is None else {"num_labels": num_labels}
    if head_seed is not None:
        torch.manual_seed(head_seed)
    return AutoModelForSequenceClassification.from_pretrained(str(path), **kwargs)


def bert_encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The blocks of a BERT classifier or bare encoder (``model.bert.encoder.layer``), for structured CAP."""
    base = getattr(model, "bert", model)
    encoder = getattr(base, "encoder", None)
    if encoder is None or not hasattr(encoder, "layer"):
        raise ValueError(
            f"structured CAP needs a BERT encoder (model.bert.encoder.layer); got {type(model).__name__}"
        )
    return encoder.layer


#: the config key of a structurally pruned classifier's per-layer FFN widths (CAP-f, robustprune.cap.structured)
SIZES_KEY = "cap_intermediate_sizes"


def is_structured(path: str | Path) -> bool:
    """Whether a saved model directory holds a CAP-f model (its config records per-layer FFN widths)."""
    import json

    cfg = Path(path) / "config.json"
    return cfg.is_file() and SIZES_KEY in json.loads(cfg.read_text())


def load_structured(path: str | Path) -> nn.Module:
    """Rebuild a saved CAP-f classifier: heads from ``config.pruned_heads``, FFN widths from
    ``config.cap_intermediate_sizes``, then the weights (strict: every tensor must fit)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForSequenceClassification
    from transformers.pytorch_utils import prune_linear_layer

    path = Path(path)
    config = AutoConfig.from_pretrained(str(path))
    sizes = getattr(config, SIZES_KEY, None)
    model = AutoModelForSequenceClassification.from_config(config)  # prunes config.pruned_heads at init
    layers = bert_encoder_layers(model)
    if sizes is not None:
        if len(sizes) != len(layers):
            raise ValueError(f"{path}: {SIZES_KEY} has {len(sizes)} entries for {len(layers)} layers")
        for layer, width in zip(layers, sizes, strict=True):
            keep = torch.arange(int(width))
            layer.intermediate.dense = prune_linear_layer(layer.intermediate.dense, keep, dim=0)
            layer.output.dense = prune_linear_layer(layer.output.dense, keep, dim=1)
    state = load_file(str(path / "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ValueError(
            f"{path}: weights do not fit the recorded structure: missing {missing}, unexpected {unexpected}"
        )
    return model.eval()


def load_tokenizer(path: str | Path):  # noqa: ANN201 - transformers tokenizer
    from transformers import AutoTokenizer

    quiet_transformers()
    return AutoTokenizer.from_pretrained(str(path))

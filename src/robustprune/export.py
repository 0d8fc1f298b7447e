"""A pruned checkpoint a user can ship: Hugging Face files, optionally in the compressed-tensors sparse format.

``save_dense``: the pipeline's own files (``model.safetensors``, ``config.json``, the tokenizer) copied
unchanged, so that ``AutoModelForSequenceClassification.from_pretrained(dir)`` gives the exact weights the
pipeline evaluated.

``save_compressed``: the weights in the sparse formats of the ``compressed-tensors`` package (the formats
llm-compressor writes for sparse models, up to compressed-tensors 0.14; later releases dropped them):

- unstructured sparsity: ``sparse-bitmask`` (``BitmaskCompressor``): per pruned Linear, the non-zero values
  (1-D), a bit-packed mask (rows x ceil(cols/8) bytes) and each row's offset into the values;
- 2:4: ``sparse-24-bitmask`` (``Sparse24BitMaskCompressor``): the two kept values of every group of four
  (rows x cols/2) and the packed mask. Other N:M patterns are stored as ``sparse-bitmask`` with their
  ``sparsity_structure`` recorded.

``config.json`` gets the ``quantization_config`` block (``quant_method: compressed-tensors`` with a
``sparsity_config`` naming the format and the compressed modules) that transformers' compressed-tensors
integration reads to decompress on load. :func:`decompress` reads the weights back (tests check that they
equal the pruned weights exactly).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from robustprune.checkpoints import atomic_dir, write_json

#: files a Hugging Face model directory may hold besides the weights (copied when present)
CONFIG_FILES = ("config.json", "generation_config.json")
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
    "vocab.json",
    "merges.txt",
    "spiece.model",
    "sentencepiece.bpe.model",
    "tokenizer.model",
    "added_tokens.json",
    "chat_template.jinja",
)
RECORD = "robustprune.json"
FORMATS = ("safetensors", "compressed-tensors")


def weight_bytes(directory: str | Path) -> int:
    """Bytes of a model directory's weights on disk (its ``model*.safetensors``; masks excluded)."""
    return sum(f.stat().st_size for f in Path(directory).glob("model*.safetensors"))


def layer_sparsity(linears: Mapping[str, torch.nn.Linear]) -> dict[str, float]:
    """Fraction of exact zeros in each Linear's weight, by full module name."""
    return {name: float((lin.weight == 0).sum()) / lin.weight.numel() for name, lin in linears.items()}


def nm_pattern(sparsity: str) -> tuple[int, int] | None:
    """(n, m) of an N:M sparsity label such as ``2:4``, or None for a fraction."""
    if ":" not in sparsity:
        return None
    n, m = (int(x) for x in sparsity.split(":"))
    return n, m


def _copy_files(src: Path, dst: Path, names: Iterable[str]) -> list[str]:
    copied = []
    for name in names:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def make_readable(directory: Path) -> None:
    """Permissions of a directory meant to be shared: rwx/rw for the owner, read for others, as the umask
    allows (temporary files and directories are created private: 0700 / 0600)."""
    import os

    mask = os.umask(0)
    os.umask(mask)
    directory.chmod(0o755 & ~mask)
    for f in directory.iterdir():
        f.chmod((0o755 if f.is_dir() else 0o644) & ~mask)


def save_dense(src: str | Path, dest: str | Path, record: Mapping[str, Any] | None = None) -> Path:
    """Copy a saved model's weights, config and tokenizer files (and ``masks.safetensors``) unchanged into
    ``dest`` (swapped in atomically), with ``robustprune.json`` when ``record`` is given."""
    src = Path(src)
    weights = sorted(p.name for p in src.glob("model*.safetensors")) + [
        p.name for p in src.glob("model.safetensors.index.json")
    ]
    if not weights:
        raise FileNotFoundError(f"{src} holds no model*.safetensors to ship")
    with atomic_dir(dest) as tmp:
        _copy_files(src, tmp, [*weights, *CONFIG_FILES, *TOKENIZER_FILES, "masks.safetensors"])
        if record is not None:
            write_json(tmp / RECORD, dict(record))
        make_readable(tmp)
    return Path(dest)


def compression_config(targets: list[str], sparsity: str, global_sparsity: float) -> Any:  # noqa: ANN401 - a compressed_tensors SparsityCompressionConfig
    """The compressed-tensors sparsity config for ``targets`` (full Linear names) pruned to ``sparsity``."""
    from compressed_tensors.config import BitmaskConfig, Sparse24BitMaskConfig

    nm = nm_pattern(sparsity)
    if nm == (2, 4):
        return Sparse24BitMaskConfig(
            targets=targets, global_sparsity=global_sparsity, sparsity_structure="2:4"
        )
    structure = f"{nm[0]}:{nm[1]}" if nm else "unstructured"
    return BitmaskConfig(targets=targets, global_sparsity=global_sparsity, sparsity_structure=structure)


def save_compressed(
    model: torch.nn.Module,
    tokenizer: Any,  # noqa: ANN401 - a transformers tokenizer
    dest: str | Path,
    targets: list[str],
    sparsity: str,
    record: Mapping[str, Any] | None = None,
) -> Path:
    """Save ``model`` with the weights of ``targets`` compressed (module doc), tokenizer and record beside."""
    from compressed_tensors.compressors import ModelCompressor

    from robustprune.checkpoints import sort_safetensors_metadata

    weights = [model.get_submodule(t).weight for t in targets]
    zeros = sum(int((w == 0).sum()) for w in weights)
    total = sum(w.numel() for w in weights)
    config = compression_config(targets, sparsity, zeros / max(total, 1))
    compressor = ModelCompressor(sparsity_config=config)
    state = compressor.compress(
        model, state_dict={k: v.detach().cpu() for k, v in model.state_dict().items()}
    )
    with atomic_dir(dest) as tmp:
        model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        for f in tmp.glob("*.safetensors"):
            sort_safetensors_metadata(f)
        compressor.update_config(str(tmp))
        if tokenizer is not None:
            tokenizer.save_pretrained(tmp)
        if record is not None:
            write_json(tmp / RECORD, dict(record))
        make_readable(tmp)
    return Path(dest)


def decompress(directory: str | Path) -> dict[str, torch.Tensor]:
    """The dense state dict of a directory written by :func:`save_compressed` (every tensor, decompressed
    where it was compressed), read with compressed-tensors' own decompressor."""
    from compressed_tensors.compressors import ModelCompressor

    directory = Path(directory)
    compressor = ModelCompressor.from_pretrained(str(directory))
    if compressor is None or compressor.sparsity_compressor is None:
        raise ValueError(f"{directory}: config.json has no compressed-tensors sparsity_config")
    # the generator yields the decompressed weights, then every tensor that was stored as it is
    return dict(compressor.sparsity_compressor.decompress(str(directory)))


def load_compressed(directory: str | Path, causal_lm: bool = False) -> torch.nn.Module:
    """The model of a :func:`save_compressed` directory, dense, in float32 (eval mode).

    transformers (4.57) reads compressed-tensors checkpoints itself, but builds the model on the meta device
    first, which compressed-tensors' bitmask compressor cannot handle (``NotImplementedError: Cannot copy out of
    meta tensor``); its 2:4 path works with ``dtype=torch.float32`` (the default is float16). This loader
    works for both: the model from its config, then the decompressed weights (strict).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(str(directory))
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    auto = AutoModelForCausalLM if causal_lm else AutoModelForSequenceClassification
    model = auto.from_config(config, dtype=torch.float32)
    missing, unexpected = model.load_state_dict(decompress(directory), strict=False)
    persistent = {k for k, _ in model.named_parameters()} | {
        k for k in model.state_dict() if not k.endswith("position_ids")
    }
    if unexpected or set(missing) & persistent - _tied(model):
        raise ValueError(
            f"{directory}: weights do not fit the config (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    return model.eval()


def _tied(model: torch.nn.Module) -> set[str]:
    """Parameter names that share storage with another (tied embeddings): saved once, under the other name."""
    seen: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if p.data_ptr() in seen:
            tied.add(name)
        seen.setdefault(p.data_ptr(), name)
    return tied


__all__ = [
    "FORMATS",
    "RECORD",
    "compression_config",
    "decompress",
    "layer_sparsity",
    "load_compressed",
    "nm_pattern",
    "save_compressed",
    "save_dense",
    "weight_bytes",
]

"""Shipping a pruned model: compressed-tensors' sparse formats decompress back to the identical weights, are
smaller on disk than the dense file, and the dense copy is the pipeline's files unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from robustprune import export
from robustprune.modeling import prunable_linears
from tests.conftest import tiny_bert, tiny_tokenizer
from tests.helpers import magnitude_prune_rows

pytest.importorskip("compressed_tensors")


def pruned_bert(sparsity: str):
    """A tiny BERT classifier with every block Linear pruned to ``sparsity`` by magnitude (exact counts)."""
    return magnitude_prune_rows(tiny_bert(intermediate=40), sparsity)


@pytest.mark.parametrize("sparsity, fmt", [("0.875", "sparse-bitmask"), ("2:4", "sparse-24-bitmask")])
def test_compressed_tensors_decompress_to_the_identical_weights(tmp_path: Path, sparsity: str, fmt: str):
    model = pruned_bert(sparsity)
    targets = list(prunable_linears(model))
    out = export.save_compressed(
        model, tiny_tokenizer(tmp_path / "tok"), tmp_path / "out", targets, sparsity, {"method": "x"}
    )
    cfg = json.loads((out / "config.json").read_text())["quantization_config"]
    assert cfg["quant_method"] == "compressed-tensors" and cfg["sparsity_config"]["format"] == fmt
    assert cfg["sparsity_config"]["targets"] == targets
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert all(f"{t}.compressed" in keys and f"{t}.weight" not in keys for t in targets)  # every target
    stored = export.decompress(out)
    ref = model.state_dict()
    assert set(stored) == set(ref)
    for name, tensor in ref.items():
        assert torch.equal(stored[name], tensor), name  # bit-identical, every tensor
    # on disk the block Linears hold their kept values and a bit mask: smaller than the dense file
    model.save_pretrained(tmp_path / "dense")
    assert export.weight_bytes(out) < export.weight_bytes(tmp_path / "dense")
    # and the loader gives the same model: the same logits
    ids = torch.randint(5, 99, (3, 9), generator=torch.Generator().manual_seed(0))
    loaded = export.load_compressed(out)
    with torch.no_grad():
        assert torch.equal(loaded(input_ids=ids).logits, model(input_ids=ids).logits)
    assert json.loads((out / export.RECORD).read_text()) == {"method": "x"}


def test_the_compressed_values_are_only_the_kept_weights(tmp_path: Path):
    """sparse-bitmask stores one value per non-zero weight: a model left dense would not shrink."""
    from safetensors import safe_open

    model = pruned_bert("0.875")
    name = "bert.encoder.layer.0.intermediate.dense"
    out = export.save_compressed(model, None, tmp_path / "o", [name], "0.875")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        values = f.get_tensor(f"{name}.compressed")
    assert f"{name}.weight" not in keys and f"{name}.bitmask" in keys
    assert values.numel() == int((model.get_submodule(name).weight != 0).sum())
    assert "bert.encoder.layer.1.intermediate.dense.weight" in keys  # not a target: stored as it is


def test_dense_copy_is_the_pipelines_files_unchanged(tmp_path: Path):
    src = tmp_path / "pruned"
    model = pruned_bert("0.875")
    model.save_pretrained(src)
    tiny_tokenizer(src).save_pretrained(src)
    (src / "metrics.json").write_text("{}")  # the stage's bookkeeping is not shipped
    out = export.save_dense(src, tmp_path / "out", {"sparsity": "0.875"})
    for f in ("model.safetensors", "config.json", "vocab.txt", "tokenizer_config.json"):
        assert (out / f).read_bytes() == (src / f).read_bytes()
    assert not (out / "metrics.json").exists()
    assert json.loads((out / export.RECORD).read_text()) == {"sparsity": "0.875"}
    (tmp_path / "no-weights").mkdir()
    with pytest.raises(FileNotFoundError):
        export.save_dense(tmp_path / "no-weights", tmp_path / "x")


def test_layer_sparsity_and_patterns():
    model = pruned_bert("0.875")
    layers = export.layer_sparsity(prunable_linears(model))
    assert len(layers) == 12 and all(
        v == pytest.approx(35 / 40) or v == pytest.approx(28 / 32) for v in layers.values()
    )
    assert export.nm_pattern("2:4") == (2, 4) and export.nm_pattern("0.875") is None
    assert export.compression_config(["a"], "4:8", 0.5).format == "sparse-bitmask"

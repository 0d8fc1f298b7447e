"""Length-bucketed batched inference (robustprune.batching) against the per-row and the old in-order results."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from robustprune.attacks.wrapper import FastClassifierWrapper
from robustprune.batching import length_sorted_batches, run_length_sorted
from robustprune.fidelity import forward_with_representations
from robustprune.metrics import predict_logits
from tests.conftest import synthetic_reviews, tiny_bert, tiny_tokenizer


@pytest.fixture
def setup(tmp_path):
    rng = random.Random(3)
    texts = [t for t, _ in synthetic_reviews(11)]
    texts = [t + " and the plot is very good" * rng.randint(0, 3) for t in texts]  # lengths in random order
    assert sorted(texts, key=len) != texts
    return tiny_bert(), tiny_tokenizer(tmp_path / "tok"), texts


def _per_row(model, tok, texts) -> torch.Tensor:
    """Each text alone (no padding): the reference every batching must reproduce."""
    with torch.inference_mode():
        return torch.cat(
            [model(**tok([t], return_tensors="pt", max_length=32, truncation=True)).logits for t in texts]
        )


def _old_in_order(model, tok, texts, batch_size) -> torch.Tensor:
    """The victim wrapper's previous forward: chunks in text order, unsorted."""
    chunks = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            enc = tok(
                texts[start : start + batch_size],
                padding=True,
                truncation=True,
                max_length=32,
                return_tensors="pt",
            )
            chunks.append(model(**enc).logits.float())
    return torch.cat(chunks)


def test_batches_are_length_sorted_and_cover_every_index_once():
    texts = ["ccc", "a", "bbbb", "dd", "e"]
    batches = length_sorted_batches(texts, 2)
    assert [b.tolist() for b in batches] == [[1, 4], [3, 0], [2]]  # stable: "a" before "e"
    assert run_length_sorted([], lambda b: torch.zeros(len(b), 2), batch_size=2) is None


def test_rows_come_back_in_text_order_for_tensors_and_tuples():
    texts = ["ccc", "a", "bbbb", "dd", "e"]
    got = run_length_sorted(texts, lambda b: torch.tensor([[len(t), ord(t[0])] for t in b]), batch_size=2)
    assert got.tolist() == [[len(t), ord(t[0])] for t in texts]
    a, b = run_length_sorted(
        texts, lambda b: (torch.tensor([len(t) for t in b]), torch.ones(len(b), 3)), batch_size=3
    )
    assert a.tolist() == [len(t) for t in texts] and b.shape == (5, 3)


def test_victim_wrapper_equals_per_row_and_old_order_and_predict_logits(setup):
    model, tok, texts = setup
    wrapper = FastClassifierWrapper(model, tok, max_length=32, batch_size=4)
    got = wrapper(texts)
    assert got.shape == (len(texts), 2) and wrapper.stats.texts == len(texts)
    torch.testing.assert_close(got, _per_row(model, tok, texts), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got, _old_in_order(model, tok, texts, 4), atol=1e-5, rtol=1e-5)
    assert (got.argmax(-1) == _old_in_order(model, tok, texts, 4).argmax(-1)).all()
    # one helper: the wrapper, the metric and the fidelity forward batch identically, so agree to the bit
    np.testing.assert_array_equal(got.numpy(), predict_logits(model, tok, texts, batch_size=4, max_length=32))
    logits, reps = forward_with_representations(model, tok, texts, batch_size=4, max_length=32)
    np.testing.assert_array_equal(got.numpy(), logits)
    assert reps.shape[1] == len(texts) and reps.is_contiguous()

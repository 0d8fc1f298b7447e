"""Representation fidelity (robustprune.fidelity) on a tiny BERT."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from robustprune.fidelity import forward_with_representations, layer_cosine, summarize_cosine
from robustprune.metrics import predict_logits
from tests.conftest import synthetic_reviews, tiny_bert, tiny_tokenizer


@pytest.fixture
def setup(tmp_path):
    tok = tiny_tokenizer(tmp_path / "tok")
    texts = [t for t, _ in synthetic_reviews(10)]
    texts[3] += " and the plot is quite a very good story"  # lengths differ: batches are reordered
    return tiny_bert(), tok, texts


def test_logits_equal_predict_logits_and_representations_keep_text_order(setup):
    model, tok, texts = setup
    logits, reps = forward_with_representations(model, tok, texts, batch_size=4, max_length=32)
    np.testing.assert_allclose(
        logits, predict_logits(model, tok, texts, batch_size=4, max_length=32), atol=1e-6
    )
    assert reps.shape == (model.config.num_hidden_layers + 1, len(texts), model.config.hidden_size)
    # one text alone (no padding) gives the same pooled representation as inside a padded batch
    _, alone = forward_with_representations(model, tok, [texts[7]], batch_size=1, max_length=32)
    torch.testing.assert_close(reps[:, 7], alone[:, 0], atol=1e-5, rtol=1e-5)


def test_a_model_is_perfectly_faithful_to_itself_and_a_different_one_is_not(setup):
    model, tok, texts = setup
    _, a = forward_with_representations(model, tok, texts, batch_size=4)
    _, b = forward_with_representations(tiny_bert(seed=5), tok, texts, batch_size=4)
    same = summarize_cosine(layer_cosine(a, a))
    assert same.per_layer == pytest.approx([1.0] * a.shape[0], abs=1e-6) and same.n == len(texts)
    other = summarize_cosine(layer_cosine(b, a))
    assert other.last < 0.99 and other.mean < same.mean
    with pytest.raises(ValueError, match="shape"):
        layer_cosine(a, a[:, :3])


def test_embedding_layer_fidelity_ignores_encoder_pruning(setup):
    model, tok, texts = setup
    pruned = tiny_bert()
    with torch.no_grad():
        pruned.bert.encoder.layer[1].intermediate.dense.weight.zero_()
    _, a = forward_with_representations(model, tok, texts)
    _, b = forward_with_representations(pruned, tok, texts)
    f = summarize_cosine(layer_cosine(b, a))
    assert f.per_layer[0] == pytest.approx(1.0, abs=1e-6)  # embeddings untouched
    assert f.per_layer[1] == pytest.approx(1.0, abs=1e-6)  # block 0 untouched
    assert f.per_layer[2] < 1 - 1e-6  # block 1 changed


def test_summarize_cosine_values_and_empty_table():
    """Per-layer means over examples, their mean, the last layer's, the example count; an empty table is
    NaN with n = 0."""
    import math

    cos = torch.tensor([[1.0, 0.5], [0.8, 0.6], [0.2, 0.4]])
    f = summarize_cosine(cos)
    assert f.per_layer == pytest.approx([0.75, 0.7, 0.3]) and f.last == pytest.approx(0.3)
    assert f.mean == pytest.approx((0.75 + 0.7 + 0.3) / 3) and f.n == 2
    assert f.to_dict() == {"per_layer": f.per_layer, "mean": f.mean, "last": f.last, "n": 2}
    one = summarize_cosine(torch.tensor([[0.9]]))
    assert one.per_layer == pytest.approx([0.9]) and one.n == 1
    empty = summarize_cosine(torch.zeros(0, 0))
    assert empty.per_layer == [] and empty.n == 0 and math.isnan(empty.mean) and math.isnan(empty.last)

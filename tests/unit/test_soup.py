from __future__ import annotations

import torch

from robustprune.soup import average_state_dicts, greedy_soup
from tests.conftest import tiny_bert


def test_soup_of_identical_models_equals_the_model():
    sd = tiny_bert(seed=3).state_dict()
    avg = average_state_dicts([sd, sd, sd])
    assert avg.keys() == sd.keys()
    for k in sd:
        assert torch.equal(avg[k], sd[k]), k


def test_uniform_soup_is_the_mean_and_keeps_integer_buffers():
    a, b = tiny_bert(seed=1).state_dict(), tiny_bert(seed=2).state_dict()
    avg = average_state_dicts([a, b])
    w = "bert.encoder.layer.0.attention.self.query.weight"
    torch.testing.assert_close(avg[w], (a[w] + b[w]) / 2)
    steps = average_state_dicts([{"n": torch.tensor([3])}, {"n": torch.tensor([5])}])["n"]
    assert torch.equal(steps, torch.tensor([3]))


def test_greedy_soup_keeps_only_ingredients_that_do_not_hurt():
    good1, good2, bad = ({"w": torch.tensor([1.0])}, {"w": torch.tensor([1.2])}, {"w": torch.tensor([9.0])})

    def score(sd):  # validation accuracy peaks near w = 1.1
        return 1.0 - abs(float(sd["w"]) - 1.1)

    res = greedy_soup(
        [("bad", bad, 0.1), ("good1", good1, score(good1)), ("good2", good2, score(good2))], score
    )
    assert res.members == ["good1", "good2"]
    torch.testing.assert_close(res.state_dict["w"], torch.tensor([1.1]))
    assert res.validation_accuracy >= max(score(good1), score(good2))
    assert [h["kept"] for h in res.history] == [True, True, False]


def test_length_bucketed_batches_cover_each_example_once():
    import numpy as np

    from robustprune.finetune import length_bucketed_batches

    lengths = np.random.default_rng(0).integers(5, 100, size=1003)
    batches = length_bucketed_batches(lengths, 32, np.random.default_rng(1), bucket=4)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1003))
    assert max(len(b) for b in batches) == 32
    spread = np.mean([lengths[b].max() - lengths[b].min() for b in batches])
    assert spread < 40  # random batches of 32 from U(5, 100) span ~85
    again = length_bucketed_batches(lengths, 32, np.random.default_rng(1), bucket=4)
    assert all(np.array_equal(a, b) for a, b in zip(batches, again, strict=True))

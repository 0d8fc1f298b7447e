from __future__ import annotations

import pytest
import torch

from robustprune.soup import SoupScore, accepts, average_state_dicts, greedy_select
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


def _soup_of(weights: dict[str, float], members) -> float:
    return sum(weights[m] for m in members) / len(members)


def test_greedy_soup_keeps_only_ingredients_that_do_not_hurt():
    w = {"bad": 9.0, "good1": 1.05, "good2": 1.2}

    def score(members):  # validation accuracy peaks near w = 1.1
        return SoupScore(1.0 - abs(_soup_of(w, members) - 1.1))

    own = {n: score([n]) for n in ("bad", "good1", "good2")}
    res = greedy_select(own, score)
    assert res.ranking == ["good1", "good2", "bad"]
    assert res.members == ["good1", "good2"]
    assert res.score.accuracy == pytest.approx(0.975)
    assert [h["kept"] for h in res.history] == [True, True, False]
    avg = average_state_dicts([{"w": torch.tensor([w[m]])} for m in res.members])["w"]
    torch.testing.assert_close(avg, torch.tensor([1.125]))


def test_robust_greedy_ranks_by_robustness_and_guards_clean_accuracy():
    own = {
        "z": SoupScore(accuracy=0.58, robustness=0.46),  # collapsed to one class: "robust", useless
        "a": SoupScore(accuracy=0.80, robustness=0.10),
        "b": SoupScore(accuracy=0.79, robustness=0.12),
        "c": SoupScore(accuracy=0.78, robustness=0.08),
    }
    soups = {
        ("b", "a"): SoupScore(accuracy=0.81, robustness=0.12),  # same robustness, clean fine: kept
        ("b", "a", "c"): SoupScore(accuracy=0.77, robustness=0.20),  # more robust, 3 points below a: refused
    }
    res = greedy_select(own, lambda m: soups[tuple(m)], criterion="robustness", max_accuracy_drop=0.02)
    assert res.ranking == ["b", "a", "c", "z"]  # inadmissible z last, whatever its robustness
    assert res.members == ["b", "a"]
    assert res.score == SoupScore(accuracy=0.81, robustness=0.12)
    assert [h["kept"] for h in res.history] == [True, True, False, False]
    assert res.history[-1].get("inadmissible") is True  # never averaged (soups has no entry with z)


def test_robust_greedy_refuses_a_robustness_drop_and_needs_scores():
    own = {"a": SoupScore(0.8, 0.3), "b": SoupScore(0.8, 0.2)}
    res = greedy_select(own, lambda m: SoupScore(0.85, 0.29), criterion="robustness")
    assert res.members == ["a"] and res.history[1]["kept"] is False
    with pytest.raises(ValueError, match="robustness score"):
        greedy_select({"a": SoupScore(0.8)}, lambda m: SoupScore(0.8), criterion="robustness")
    assert accepts(SoupScore(0.5), SoupScore(0.5), "accuracy", 0.0)
    assert not accepts(SoupScore(0.7, 0.5), SoupScore(0.8, 0.1), "robustness", 0.02, best_accuracy=0.8)


def test_greedy_history_carries_each_robustness_interval():
    """Every history row (ingredients and candidate soups) has the 95% Wilson interval of its robustness on
    its attacked rows: 3 of 25 -> [4.2%, 30.0%]; 30 of 250 -> [8.5%, 16.6%] (narrower: more rows)."""
    own = {"a": SoupScore(0.8, 3 / 25, 25), "b": SoupScore(0.8, 2 / 25, 25)}
    res = greedy_select(own, lambda m: SoupScore(0.82, 30 / 250, 250), criterion="robustness")
    first, second = res.history
    assert (first["robustness_low"], first["robustness_high"]) == pytest.approx((0.0417, 0.2997), abs=5e-4)
    assert (second["robustness_low"], second["robustness_high"]) == pytest.approx((0.0854, 0.1661), abs=5e-4)
    assert first["attacked"] == 25 and second["attacked"] == 250
    assert "robustness_low" not in greedy_select({"a": SoupScore(0.8)}, lambda m: SoupScore(0.8)).history[0]


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


# ---------------------------------------------------------------- properties the mutation run asked for
def test_accepts_defaults_and_needs_robustness_on_both_sides():
    """With ``robustness`` and no best accuracy given, every clean accuracy is admissible (best 0); a
    missing robustness score is a programming error, not a comparison."""
    assert accepts(SoupScore(0.5, 0.3), SoupScore(0.9, 0.3), "robustness", 0.02)
    with pytest.raises(AssertionError):
        accepts(SoupScore(0.5, None), SoupScore(0.9, 0.3), "robustness", 0.02)
    with pytest.raises(AssertionError):
        accepts(SoupScore(0.5, 0.3), SoupScore(0.9, None), "robustness", 0.02)


def test_admissible_includes_the_boundary():
    from robustprune.soup import admissible

    edge = 0.5 - 0.1 - 1e-12
    assert admissible(SoupScore(edge), 0.1, 0.5)  # exactly at best − drop (tolerance included)
    assert not admissible(SoupScore(edge - 1e-9), 0.1, 0.5)


def test_greedy_history_rows_and_every_inadmissible_ingredient_recorded():
    """One history row per candidate, the first being the top-ranked ingredient; inadmissible ingredients are
    all listed (and never tried) even when several are."""
    scores = {
        "a": SoupScore(0.90, 0.50),
        "b": SoupScore(0.70, 0.60),  # most robust, but 20 points below the best: inadmissible
        "c": SoupScore(0.60, 0.55),  # inadmissible too
        "d": SoupScore(0.89, 0.40),
    }
    tried = []

    def evaluate(members):
        tried.append(list(members))
        return SoupScore(0.9, 0.5)

    res = greedy_select(scores, evaluate, criterion="robustness", max_accuracy_drop=0.02)
    assert res.ranking == ["a", "d", "b", "c"]
    assert [h["candidate"] for h in res.history] == ["a", "d", "b", "c"]
    assert res.history[0]["kept"] and res.history[0]["members"] == ["a"]
    assert [h.get("inadmissible", False) for h in res.history] == [False, False, True, True]
    assert [h["members"] for h in res.history] == [["a"], ["a", "d"], ["a", "d"], ["a", "d"]]
    assert tried == [["a", "d"]]


def test_average_of_one_state_dict_is_itself_and_key_mismatch_names_the_dict():
    sd = tiny_bert().state_dict()
    out = average_state_dicts([sd])
    assert all(torch.equal(out[k], v) for k, v in sd.items())
    other = {f"x{i}": torch.zeros(1) for i in range(7)}
    with pytest.raises(ValueError, match=r"state dict 1 has different keys") as exc:
        average_state_dicts([{"x0": torch.zeros(1)}, other])
    assert "['x1', 'x2', 'x3', 'x4', 'x5']" in str(exc.value)  # the first five differing keys, sorted
    with pytest.raises(ValueError, match=r"state dict 2 has different keys"):
        average_state_dicts([sd, sd, {**sd, "extra": torch.zeros(1)}])

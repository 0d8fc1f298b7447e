"""The CAP report says what ran, and gives no "what the contrastive terms add" verdict against a collapsed
(near-constant) ablation; robustprune.degeneracy's class share."""

from __future__ import annotations

import pytest

from robustprune.cap.report import cap_markdown, summarize, what_ran
from robustprune.config import parse_params
from robustprune.degeneracy import class_share, near_constant, predictions_from_correct


def _stage(name: str, run: str, s: float, correct: list[int], pred: list[int] | None = None) -> dict:
    out = {
        "name": name,
        "run": run,
        "sparsity_target": s,
        "measured_sparsity": s,
        "steps": 15,
        "train_seconds": 1.0,
        "final_loss": 0.5,
        "loss_parts": {},
        "test_correct": correct,
    }
    if pred is not None:
        out["test_predictions"] = pred
    return out


LABELS = [0, 1] * 10  # 20 test rows, half of each class


def _report(settings: dict, nocl_pred: list[int] | None, with_labels: bool = True) -> dict:
    cap_correct = [1] * 16 + [0] * 4
    nocl_correct = [int(p == y) for p, y in zip(nocl_pred or [0] * 20, LABELS, strict=True)]
    banks = {"n": 2000, "seconds": 1.0, "dense_test_correct": [1] * 18 + [0] * 2, "teacher": "greedy"}
    if with_labels:
        banks["test_labels"] = LABELS
    runs = {
        "cap": [_stage(f"cap_{s:g}", "cap", s, cap_correct, LABELS) for s in settings["sparsities"]],
        "cap-nocl": [
            _stage(f"cap-nocl_{s:g}", "cap-nocl", s, nocl_correct, nocl_pred if with_labels else None)
            for s in settings["sparsities"]
        ],
    }
    return summarize(settings, banks, runs, [], None)


def _settings(**cap) -> dict:
    return parse_params({"cap": cap}).model_dump(mode="json")["cap"]


def test_default_what_ran_says_magnitude_is_not_cap_m_and_the_soup_is_the_start():
    text = what_ran(_report(_settings(), [0] * 20))
    assert "not CAP-m" in text and "CAP-m (top-K" not in text
    assert "dense soup itself, which is also the KD teacher and the FiC bank" in text
    assert "15 + 15 + 30 + 20 steps (80 in all) of batch 32" in text
    assert "learning rate 0.0003" in text and "after each stage, eval mode" in text
    assert "`mean`" in text


def test_reference_what_ran_names_cap_m_pretrained_start_epoch_snc_and_the_ablation_settings():
    s = _settings(
        start="pretrained", criterion="movement", representation="cls", snapshots="epoch", lr=3e-5,
        length_unit="epochs", path="separate", sparsities=[0.875, 0.9], warmup_steps=2, ramp_steps=5,
        hold_steps=3, ablation_settings={"lr": 5e-5},
    )  # fmt: skip
    text = what_ran(_report(s, [0, 1] * 10))
    assert "CAP-m (top-K of learned movement scores" in text and "not CAP-m" not in text
    assert "pre-trained encoder with a fresh seeded head" in text
    assert "one run per sparsity (87.5% → 90%), each from the start point" in text
    assert "630 + 630 steps" in text and "the first 126 dense" in text  # 2000 examples: 63 steps an epoch
    assert "learning rate 3e-05" in text and "scores 0.01" in text
    assert "at the start of every epoch after the first, train mode" in text
    assert "after the classifier's dropout" in text
    assert "The ablation runs (cap-nocl) differ only in: learning rate 5e-05" in text


def test_a_near_constant_ablation_gets_no_contrastive_verdict():
    report = _report(
        _settings(sparsities=[0.5, 0.9], ramp_steps=5, hold_steps=10), [0] * 20
    )  # predicts class 0 on every row
    assert all(d["b_near_constant"] for d in report["ablation"])
    assert report["runs"]["cap-nocl"][0]["predicted"] == {
        "majority_class": 0, "share": 1.0, "n": 20, "near_constant": True,
    }  # fmt: skip
    md = cap_markdown(report)
    rows = [ln for ln in md.splitlines() if ln.startswith("| cap_")]
    assert rows and all("no verdict: cap-nocl_" in ln and "predicts (nearly) one class" in ln for ln in rows)
    assert "| better |" not in md and "| worse |" not in md
    assert "cap-nocl_0.5 is not a baseline: it predicts class 0 on 100.0% of the test rows" in md


def test_a_working_ablation_keeps_its_verdict_and_share_is_computed_from_correctness_and_labels():
    pred = [0, 1] * 8 + [1, 1, 1, 1]  # 12 of 20 on class 1: a baseline
    report = _report(_settings(sparsities=[0.5], ramp_steps=5, hold_steps=10), pred, with_labels=True)
    assert not report["ablation"][0]["b_near_constant"]
    md = cap_markdown(report)
    assert "What the contrastive terms add" in md and "is not a baseline" not in md
    # no per-row predictions kept: binary predictions follow from correctness and the labels
    no_pred = _report(_settings(sparsities=[0.5], ramp_steps=5, hold_steps=10), [0] * 20, with_labels=True)
    for st in no_pred["runs"]["cap-nocl"]:
        assert st["predicted"]["near_constant"]
    unknown = _report(_settings(sparsities=[0.5], ramp_steps=5, hold_steps=10), [0] * 20, with_labels=False)
    assert (
        unknown["runs"]["cap-nocl"][0]["predicted"] is None and not unknown["ablation"][0]["b_near_constant"]
    )


def test_class_share_and_predictions_from_correctness():
    assert class_share([1, 1, 0, 1]).to_dict() == {
        "majority_class": 1,
        "share": 0.75,
        "n": 4,
        "near_constant": False,
    }
    assert class_share([2, 0, 2, 0]).majority_class == 0  # ties: the smaller class id
    assert near_constant([0] * 9 + [1]) and not near_constant([0] * 8 + [1] * 2)
    assert near_constant([0] * 8 + [1] * 2, threshold=0.8)
    assert predictions_from_correct([1, 0, 0, 1], [0, 0, 1, 1]) == [0, 1, 0, 1]
    with pytest.raises(ValueError, match="labels 0/1"):
        predictions_from_correct([1], [2])
    with pytest.raises(ValueError, match="one correctness flag per label: 2 vs 1"):
        predictions_from_correct([1, 0], [0])
    with pytest.raises(ValueError, match="no predictions"):
        class_share([])
    with pytest.raises(ValueError, match="threshold"):
        class_share([0], threshold=0.0)

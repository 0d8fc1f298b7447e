"""The degeneracy guard: a model that ignores its input is flagged; one that reads it is not."""

from __future__ import annotations

import math

import pytest

from robustprune.degeneracy import class_balance, predictions_from_correct


def test_a_constant_predictor_is_near_constant_with_kappa_zero():
    labels = [1] * 289 + [0] * 211  # the evidence run's class shares (57.8% "fresh")
    b = class_balance(labels, [1] * 500, 2)
    assert b.recall == (0.0, 1.0) and b.predicted_share == (0.0, 1.0)
    assert b.kappa == pytest.approx(0.0) and b.near_constant


def test_sparsegpt_875_pattern_three_rotten_predictions_is_still_near_constant():
    """issue #23: 497 of 500 rows one class, recall on the other 1.4%, kappa 0.016."""
    labels = [1] * 289 + [0] * 211
    preds = [1] * 289 + [0] * 3 + [1] * 208
    b = class_balance(labels, preds, 2)
    assert b.recall[0] == pytest.approx(3 / 211) and b.near_constant
    assert 0 < b.kappa < 0.05


def test_a_model_that_reads_its_input_is_not_near_constant():
    labels = [0, 1] * 50
    preds = [0, 1] * 40 + [1, 0] * 10  # 80% accuracy, both classes recalled at 80%
    b = class_balance(labels, preds, 2)
    assert b.recall == pytest.approx((0.8, 0.8)) and not b.near_constant
    assert b.kappa == pytest.approx(0.6)
    assert class_balance(labels, labels, 2).kappa == pytest.approx(1.0)


def test_the_threshold_is_the_params_value_and_strict():
    labels = [0] * 10 + [1] * 10
    preds = [0] * 1 + [1] * 9 + [1] * 10  # recall 10% on class 0
    assert not class_balance(labels, preds, 2, min_recall=0.1).near_constant
    assert class_balance(labels, preds, 2, min_recall=0.11).near_constant


def test_a_class_absent_from_the_labels_does_not_make_a_model_near_constant():
    b = class_balance([0, 0, 1, 1], [0, 0, 1, 1], 3)
    assert math.isnan(b.recall[2]) and not b.near_constant


def test_predictions_from_correctness_for_binary_labels_only():
    assert predictions_from_correct([True, False, True], [1, 1, 0], 2) == [1, 0, 0]
    with pytest.raises(ValueError, match="2 classes"):
        predictions_from_correct([True], [2], 3)
    with pytest.raises(ValueError, match="class ids"):
        class_balance([0, 2], [0, 1], 2)


def test_class_share_uses_the_reports_recall_rule_when_labels_are_known():
    """One near-constant rule: with labels, class_share judges by recall (< 10% on a class), not by the share."""
    from robustprune.degeneracy import class_share

    labels = [0] * 30 + [1] * 70
    preds = [0, 0] + [1] * 28 + [1] * 56 + [0] * 14  # class 0 recall 2/30; class 1 predicted on 84% of rows
    assert class_share(preds, labels).near_constant and not class_share(preds).near_constant
    perfect_skewed = [0] * 10 + [1] * 90  # reads its input perfectly; one class is 90% of the rows
    assert (
        not class_share(perfect_skewed, perfect_skewed).near_constant
        and class_share(perfect_skewed).near_constant
    )

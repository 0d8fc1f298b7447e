"""Intervals and verdicts (robustprune.stats) against scipy and against their defining properties."""

from __future__ import annotations

import math

import pytest

from robustprune.stats import (
    NO_DIFFERENCE,
    clopper_pearson,
    mcnemar_exact,
    min_detectable,
    paired_difference,
    rate,
    spearman,
    wilson_interval,
)

scipy_stats = pytest.importorskip("scipy.stats")


@pytest.mark.parametrize(("k", "n"), [(0, 10), (3, 10), (10, 10), (812, 1000), (1, 25), (24, 25)])
def test_wilson_matches_the_closed_form_and_contains_the_estimate(k, n):
    low, high = wilson_interval(k, n)
    z = 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    assert low <= p <= high
    assert (low + high) / 2 == pytest.approx(centre, abs=1e-12) or low == 0 or high == 1
    # published values (e.g. statsmodels' proportion_confint(method="wilson")) for 0/10 and 3/10
    if (k, n) == (0, 10):
        assert (low, high) == pytest.approx((0.0, 0.27753279), abs=1e-7)
    if (k, n) == (3, 10):
        assert (low, high) == pytest.approx((0.10779127, 0.60322185), abs=1e-7)


def test_rate_of_no_example_is_nan():
    r = rate(0, 0)
    assert math.isnan(r.value) and r.pct() == "–"


@pytest.mark.parametrize(("k", "m"), [(0, 5), (1, 7), (5, 12), (12, 12), (40, 97)])
def test_clopper_pearson_equals_scipy_beta_quantiles(k, m):
    low, high = clopper_pearson(k, m)
    exp_low = 0.0 if k == 0 else scipy_stats.beta.ppf(0.025, k, m - k + 1)
    exp_high = 1.0 if k == m else scipy_stats.beta.ppf(0.975, k + 1, m - k)
    assert low == pytest.approx(exp_low, abs=1e-9)
    assert high == pytest.approx(exp_high, abs=1e-9)


@pytest.mark.parametrize(("b", "c"), [(0, 0), (2, 0), (6, 0), (10, 3), (3, 10), (25, 25), (40, 19)])
def test_mcnemar_exact_equals_the_binomial_test(b, c):
    expected = 1.0 if b + c == 0 else scipy_stats.binomtest(b, b + c, 0.5).pvalue
    assert mcnemar_exact(b, c) == pytest.approx(expected, rel=1e-9)


def test_interval_and_mcnemar_never_disagree():
    for m in range(0, 41):
        for b in range(m + 1):
            a = [True] * b + [False] * (m - b) + [True] * 5
            bb = [False] * b + [True] * (m - b) + [True] * 5
            d = paired_difference(a, bb)
            excludes_zero = d.low > 0 or d.high < 0
            assert excludes_zero == (d.p_value < 0.05), (b, m - b, d)
            assert d.low <= d.diff <= d.high


def test_two_of_25_is_no_measurable_difference():
    a = [True] * 20 + [False] * 5
    b = [True] * 18 + [False] * 7  # A right on 2 more examples, B never right where A is wrong
    d = paired_difference(a, b)
    assert d.diff == pytest.approx(0.08)
    assert d.a_only == 2 and d.b_only == 0
    assert d.verdict == NO_DIFFERENCE
    assert d.low < 0 < d.high
    assert d.mde is None  # two discordant pairs can never be significant


def test_a_large_consistent_difference_is_better_and_its_mirror_worse():
    a = [True] * 90 + [False] * 10
    b = [True] * 70 + [False] * 30
    assert paired_difference(a, b).verdict == "better"
    assert paired_difference(b, a).verdict == "worse"
    assert paired_difference(b, a).pts().startswith("-20.0")


def test_identical_models_differ_by_exactly_zero():
    a = [True, False, True, True]
    d = paired_difference(a, a)
    assert (d.diff, d.low, d.high, d.p_value, d.verdict) == (0.0, 0.0, 0.0, 1.0, NO_DIFFERENCE)


def test_paired_difference_refuses_unpaired_inputs():
    with pytest.raises(ValueError, match="same examples"):
        paired_difference([True], [True, False])


def test_min_detectable_is_six_one_way_pairs_at_5_percent():
    assert min_detectable(5, 100) is None
    assert min_detectable(6, 100) == pytest.approx(0.06)
    assert mcnemar_exact(6, 0) < 0.05 <= mcnemar_exact(5, 0)
    d = min_detectable(40, 200)
    assert d is not None
    k = round(d * 200)
    assert mcnemar_exact((40 + k) // 2, (40 - k) // 2) < 0.05 <= mcnemar_exact((38 + k) // 2, (42 - k) // 2)


def test_spearman_matches_scipy_with_ties():
    x = [0.1, 0.4, 0.4, 0.9, 0.3, 0.7, 0.2, 0.8]
    y = [1.0, 3.0, 2.0, 8.0, 2.0, 5.0, 0.5, 9.0]
    c = spearman(x, y)
    assert c.rho == pytest.approx(scipy_stats.spearmanr(x, y).statistic, abs=1e-12)
    assert c.low < c.rho < c.high
    assert math.isnan(spearman([1, 2], [2, 1]).rho)

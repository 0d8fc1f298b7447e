"""Uncertainty for every rate the report shows, and verdicts for every comparison it makes.

* :func:`rate` — a proportion with its Wilson score interval (Wilson 1927; Agresti & Coull 1998 show it
  keeps close to nominal coverage at small n and near 0 or 1, where the normal interval collapses).
* :func:`paired_difference` — the difference of two models' accuracies on the *same* examples. With ``b``
  examples right for A and wrong for B, ``c`` the reverse, the difference is ``(b - c) / n``. Its interval is
  Tango's score interval for the difference of paired proportions (Tango 1998, Stat Med 17:891, eq. 3–5;
  Newcombe 1998 finds it among the best-behaved paired intervals): the set of δ whose score statistic, with
  the nuisance cell at its constrained maximum-likelihood value, stays within ±z. Its p-value is the same
  score test at δ = 0, which reduces to McNemar's uncorrected statistic (b − c)/√(b + c), so the interval
  excludes 0 exactly when p < 1 − confidence: interval, p-value and verdict never disagree. The interval it
  replaced (Clopper-Pearson for b/(b + c) mapped to the difference with the discordant share treated as
  known) under-covers: 0.64 at b/n = 1.2%, c/n = 30.8%, n = 500, enumerated exactly
  (``tests/unit/test_stats.py``; the whole grid: ``python benchmarks/interval_coverage.py``).
* :func:`clustered_rate`, :func:`clustered_paired_difference` — the same intervals for examples that come in
  clusters (several adversarial texts transferred from one test row): the Rao & Scott (1992) adjustment
  divides the counts by the design effect, the ratio of the cluster-robust variance to the independent one.
* :func:`spearman` — rank correlation across models with an exact (n ≤ 8) or seeded Monte-Carlo
  permutation p-value; no interval (the Fisher-z one has no coverage guarantee at a handful of models).

Pure functions over plain sequences and numpy arrays; no heavy imports.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import permutations
from statistics import NormalDist

import numpy as np
from numpy.typing import ArrayLike

from robustprune.records import Record

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no measurable difference"


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence!r} must be in (0, 1)")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True)
class Rate(Record):
    """``k`` of ``n`` with its ``confidence`` Wilson interval (fractions in [0, 1]); NaN when ``n`` is 0."""

    k: int
    n: int
    value: float
    low: float
    high: float

    def pct(self, digits: int = 1) -> str:
        """``"81.2 [78.7, 83.5]"``: percent with the interval, or ``"–"`` for no example."""
        if not self.n:
            return "–"
        return f"{100 * self.value:.{digits}f} [{100 * self.low:.{digits}f}, {100 * self.high:.{digits}f}]"


def wilson_interval(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion ``k / n``."""
    if n <= 0:
        return math.nan, math.nan
    if not 0 <= k <= n:
        raise ValueError(f"k={k} must be within 0..n={n}")
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    low = 0.0 if k == 0 else max(0.0, centre - half)
    high = 1.0 if k == n else min(1.0, centre + half)
    return low, high


def wilson_interval_float(k: float, n: float, confidence: float = 0.95) -> tuple[float, float]:
    """:func:`wilson_interval` for effective (non-integer) counts, e.g. divided by a design effect."""
    if n <= 0:
        return math.nan, math.nan
    z = _z(confidence)
    p = k / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(max(p * (1 - p), 0.0) / n + z * z / (4 * n * n)) / denom
    return (0.0 if k <= 0 else max(0.0, centre - half)), (1.0 if k >= n else min(1.0, centre + half))


def rate(k: int, n: int, confidence: float = 0.95) -> Rate:
    """``k`` successes out of ``n`` with the Wilson interval."""
    low, high = wilson_interval(int(k), int(n), confidence)
    return Rate(int(k), int(n), k / n if n else math.nan, low, high)


def rate_of(flags: Sequence[bool], confidence: float = 0.95) -> Rate:
    """The share of true flags, with the Wilson interval."""
    return rate(sum(bool(f) for f in flags), len(flags), confidence)


# ------------------------------------------------------------------------------------------ binomial
def _binom_cdf(k: int, m: int) -> float:
    """P(X <= k) for X ~ Binomial(m, 1/2), exact."""
    if k < 0:
        return 0.0
    if k >= m:
        return 1.0
    return sum(math.comb(m, i) for i in range(k + 1)) / 2**m


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value for ``b`` and ``c`` discordant pairs (1 when there are none)."""
    m = b + c
    if m == 0:
        return 1.0
    return min(1.0, 2 * _binom_cdf(min(b, c), m))


def _beta_ppf(q: float, a: float, b: float) -> float:
    """Quantile of Beta(a, b) by bisection on the regularised incomplete beta (a, b > 0)."""
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = (lo + hi) / 2
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) (continued fraction, Numerical Recipes 6.4)."""
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    ln_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1) / (a + b + 2):
        return math.exp(ln_front) * _betacf(a, b, x) / a
    return 1 - math.exp(ln_front) * _betacf(b, a, 1 - x) / b


def _betacf(a: float, b: float, x: float) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1, a - 1
    c, d = 1.0, 1 - qab * x / qap
    d = 1 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1 + aa * d
        d = 1 / (d if abs(d) > tiny else tiny)
        c = 1 + aa / c if abs(1 + aa / c) > tiny else tiny
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return h


def clopper_pearson(k: int, m: int, confidence: float = 0.95) -> tuple[float, float]:
    """Central exact interval of a binomial proportion ``k / m``."""
    if m <= 0:
        return 0.0, 1.0
    alpha = 1 - confidence
    low = 0.0 if k == 0 else _beta_ppf(alpha / 2, k, m - k + 1)
    high = 1.0 if k == m else _beta_ppf(1 - alpha / 2, k + 1, m - k)
    return low, high


# ------------------------------------------------------------------------------------------ paired
def tango_statistic(b: ArrayLike, c: ArrayLike, n: ArrayLike, delta: ArrayLike) -> np.ndarray:
    """Tango's score statistic for H0: p_b − p_c = ``delta`` (Tango 1998, eq. 3–4), elementwise.

    ``b``: A right and B wrong, ``c``: the reverse, ``n``: examples (non-integer counts are allowed: the
    Rao-Scott adjustment divides them by a design effect). The nuisance cell p_c takes its constrained
    maximum-likelihood value q, the positive root of 2n q² + W q − c δ(1 − δ) = 0 with
    W = −b − c + (2n − b + c) δ; then T = (b − c − nδ) / √(n (2q + δ(1 − δ))). T decreases in δ.
    """
    b, c, n, d = (np.asarray(v, dtype=float) for v in (b, c, n, delta))
    w = -b - c + (2 * n - b + c) * d
    q = (np.sqrt(np.maximum(w * w + 8 * n * c * d * (1 - d), 0.0)) - w) / (4 * n)
    var = n * (2 * q + d * (1 - d))
    num = b - c - n * d
    with np.errstate(divide="ignore", invalid="ignore"):
        t = num / np.sqrt(var)
    return np.where(var > 0, t, np.where(num > 0, np.inf, np.where(num < 0, -np.inf, 0.0)))


def tango_interval(
    b: ArrayLike, c: ArrayLike, n: ArrayLike, confidence: float = 0.95, iterations: int = 48
) -> tuple[np.ndarray, np.ndarray]:
    """Tango's score interval for p_b − p_c, elementwise: {δ : |T(δ)| ≤ z} by bisection on each side of the
    estimate (T is monotone, so each side has one crossing; 48 halvings of [−1, 1] reach 1e-14)."""
    z = _z(confidence)
    b, c, n = (np.asarray(v, dtype=float) for v in (b, c, n))
    est = (b - c) / n
    lo_a, lo_b = np.full_like(est, -1.0), est.copy()  # T(lo_a) > z >= T(lo_b)
    hi_a, hi_b = est.copy(), np.full_like(est, 1.0)  # T(hi_a) >= -z > T(hi_b)
    for _ in range(iterations):
        mid = (lo_a + lo_b) / 2
        above = tango_statistic(b, c, n, mid) > z
        lo_a, lo_b = np.where(above, mid, lo_a), np.where(above, lo_b, mid)
        mid = (hi_a + hi_b) / 2
        below = tango_statistic(b, c, n, mid) < -z
        hi_a, hi_b = np.where(below, hi_a, mid), np.where(below, mid, hi_b)
    low = np.where(tango_statistic(b, c, n, np.full_like(est, -1.0)) <= z, -1.0, (lo_a + lo_b) / 2)
    high = np.where(tango_statistic(b, c, n, np.full_like(est, 1.0)) >= -z, 1.0, (hi_a + hi_b) / 2)
    return np.minimum(low, est), np.maximum(high, est)


def score_p_value(b: float, c: float) -> float:
    """Two-sided p of the score test at δ = 0: McNemar's (b − c)/√(b + c) against N(0, 1); 1 with no
    discordant example. The Tango interval excludes 0 exactly when this is below 1 − confidence."""
    m = b + c
    if m <= 0:
        return 1.0
    return min(1.0, 2 * (1 - NormalDist().cdf(abs(b - c) / math.sqrt(m))))


def min_detectable(m: int, n: int, alpha: float = 0.05) -> float | None:
    """The smallest |b − c| / n the score test (so the Tango interval) would declare with ``m`` discordant
    pairs out of ``n`` examples; ``None`` when no split of ``m`` pairs can be (fewer than 4 at 0.05)."""
    for d in range(m % 2, m + 1, 2):
        if score_p_value((m + d) / 2, (m - d) / 2) < alpha:
            return d / n
    return None


@dataclass(frozen=True)
class PairedDifference(Record):
    """A − B on the same ``n`` examples (fractions), its Tango interval, the score test's p and the verdict.

    ``a_only``: examples A gets right and B wrong; ``b_only``: the reverse. ``mde``: the smallest
    difference this run's discordant count could have shown (``None``: none could). ``deff``: the design
    effect the counts were divided by (1 for independent examples; > 1 for clustered ones).
    """

    diff: float
    low: float
    high: float
    n: int
    a_only: int
    b_only: int
    p_value: float
    verdict: str
    mde: float | None
    deff: float = 1.0

    def pts(self, digits: int = 1) -> str:
        """``"+4.0 [+1.2, +6.9] pts"`` in percentage points."""
        f = f"{{:+.{digits}f}}"
        return f"{f.format(100 * self.diff)} [{f.format(100 * self.low)}, {f.format(100 * self.high)}] pts"


def _discordant(a_correct: Sequence[bool], b_correct: Sequence[bool]) -> tuple[int, int, int]:
    if len(a_correct) != len(b_correct):
        raise ValueError(
            f"paired comparison needs the same examples: {len(a_correct)} vs {len(b_correct)} outcomes"
        )
    b = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if y and not x)
    return len(a_correct), b, c


def _paired(n: int, b: int, c: int, confidence: float, deff: float = 1.0) -> PairedDifference:
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, 0, 0, 1.0, NO_DIFFERENCE, None, deff)
    nb, cb, ne = b / deff, c / deff, n / deff
    low, high = (float(v[0]) for v in tango_interval([nb], [cb], [ne], confidence))
    p = score_p_value(nb, cb)
    verdict = NO_DIFFERENCE
    if p < 1 - confidence:
        verdict = BETTER if b > c else WORSE
    mde = min_detectable(b + c, n, 1 - confidence) if deff == 1.0 else None
    return PairedDifference((b - c) / n, low, high, n, b, c, p, verdict, mde, deff)


def paired_difference(
    a_correct: Sequence[bool], b_correct: Sequence[bool], confidence: float = 0.95
) -> PairedDifference:
    """Accuracy of A minus accuracy of B on the same examples, with Tango's score interval.

    The verdict is "better" / "worse" only when the interval excludes 0 (equivalently the score test
    rejects at ``1 - confidence``), else "no measurable difference".
    """
    n, b, c = _discordant(a_correct, b_correct)
    return _paired(n, b, c, confidence)


def exact_paired_coverage(
    interval: Callable[[np.ndarray, np.ndarray, int], tuple[np.ndarray, np.ndarray]],
    n: int,
    p_b: float,
    p_c: float,
    floor: float = 1e-11,
) -> float:
    """Exact coverage of a paired-difference ``interval(b, c, n) -> (low, high)`` (vectorised over arrays of
    discordant counts) when the true discordant shares are ``p_b`` and ``p_c``: the trinomial
    (b, c, n − b − c) enumerated over every outcome with probability above ``floor``."""
    b, c = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = b + c <= n
    b, c = b[keep], c[keep]
    rest = n - b - c
    log_fact = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, n + 1)))])

    def term(k: np.ndarray, p: float) -> np.ndarray:
        return np.where(k > 0, k * math.log(p), 0.0) if p > 0 else np.where(k > 0, -np.inf, 0.0)

    logp = log_fact[n] - log_fact[b] - log_fact[c] - log_fact[rest]
    prob = np.exp(logp + term(b, p_b) + term(c, p_c) + term(rest, 1 - p_b - p_c))
    sel = prob > floor
    low, high = interval(b[sel], c[sel], n)
    delta = p_b - p_c
    return float(np.sum(prob[sel] * ((low <= delta + 1e-12) & (high >= delta - 1e-12))))


# ------------------------------------------------------------------------------------------ clusters
def design_effect(values: Sequence[float], clusters: Sequence[object]) -> float:
    """Var(mean) with cluster-robust (sandwich) variance over the variance under independence, floored at
    1 (Rao & Scott 1992, §2: k/(k − 1) · Σ_g (Σ_{i∈g} (x_i − x̄))² / Σ_i (x_i − x̄)², k clusters).
    ``values``: one number per example; ``clusters``: its cluster id. Each example its own cluster: ≈ 1;
    every example copied r times into its own cluster: ≈ r."""
    if len(values) != len(clusters):
        raise ValueError(f"one cluster id per example: {len(values)} values vs {len(clusters)} ids")
    n = len(values)
    if n < 2:
        return 1.0
    x = np.asarray(values, dtype=float)
    mean = x.mean()
    naive = float(((x - mean) ** 2).sum())
    if naive == 0:
        return 1.0
    sums: dict[object, float] = {}
    for v, g in zip(x - mean, clusters, strict=True):
        sums[g] = sums.get(g, 0.0) + float(v)
    k = len(sums)
    if k < 2:
        return float(n)
    robust = k / (k - 1) * sum(s * s for s in sums.values())
    return max(1.0, robust / naive)


def clustered_rate(flags: Sequence[bool], clusters: Sequence[object], confidence: float = 0.95) -> Rate:
    """The share of true flags with a Wilson interval on Rao-Scott effective counts (k / deff of n / deff)."""
    k, n = sum(bool(f) for f in flags), len(flags)
    if n == 0:
        return rate(0, 0, confidence)
    deff = design_effect([float(bool(f)) for f in flags], clusters)
    low, high = wilson_interval_float(k / deff, n / deff, confidence)
    return Rate(k, n, k / n, low, high)


def clustered_paired_difference(
    a_correct: Sequence[bool], b_correct: Sequence[bool], clusters: Sequence[object], confidence: float = 0.95
) -> PairedDifference:
    """:func:`paired_difference` for clustered examples: the Tango interval and score test on the counts
    divided by the design effect of the per-example differences (Rao & Scott 1992)."""
    n, b, c = _discordant(a_correct, b_correct)
    d = [float(x) - float(y) for x, y in zip(a_correct, b_correct, strict=True)]
    return _paired(n, b, c, confidence, design_effect(d, clusters))


# ------------------------------------------------------------------------------------------ ranks
def _ranks(values: Sequence[float]) -> list[float]:
    """Average ranks (ties share the mean of their positions), 1-based."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


@dataclass(frozen=True)
class Correlation(Record):
    """Spearman's rho over ``n`` pairs with its two-sided permutation p-value (NaN where undefined)."""

    rho: float
    p_value: float
    n: int

    def words(self, alpha: float = 0.05) -> str:
        """How the report states it: a correlation, never a mechanism."""
        if math.isnan(self.rho):
            return f"undefined over {self.n} models (constant values)"
        stat = f"ρ = {self.rho:+.2f}, permutation p = {self.p_value:.2g}, {self.n} models"
        if self.p_value >= alpha:
            return f"no association detected: {stat}"
        return f"{'positive' if self.rho > 0 else 'negative'} rank correlation: {stat}"


def _rho(rx: Sequence[float], ry: Sequence[float]) -> float:
    n = len(rx)
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    return math.nan if sxx == 0 or syy == 0 else sxy / math.sqrt(sxx * syy)


def spearman(
    x: Sequence[float], y: Sequence[float], seed: int = 0, resamples: int = 20_000, exact_up_to: int = 8
) -> Correlation:
    """Spearman's rank correlation (average ranks for ties) with a two-sided permutation p-value: every
    permutation of y's ranks when n ≤ ``exact_up_to`` (8! = 40,320), else ``resamples`` seeded ones
    (p = (1 + hits) / (1 + resamples), Phipson & Smyth 2010)."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs pairs: {len(x)} x values vs {len(y)} y values")
    n = len(x)
    if n < 3:
        return Correlation(math.nan, math.nan, n)
    rx, ry = _ranks(list(x)), _ranks(list(y))
    rho = _rho(rx, ry)
    if math.isnan(rho):
        return Correlation(math.nan, math.nan, n)
    tol = 1e-12
    if n <= exact_up_to:
        perms = list(permutations(ry))
        hits = sum(1 for p in perms if abs(_rho(rx, p)) >= abs(rho) - tol)
        return Correlation(rho, hits / len(perms), n)
    rng = random.Random(seed)
    hits = 0
    shuffled = list(ry)
    for _ in range(resamples):
        rng.shuffle(shuffled)
        hits += abs(_rho(rx, shuffled)) >= abs(rho) - tol
    return Correlation(rho, (1 + hits) / (1 + resamples), n)

"""Uncertainty for every rate the report shows, and verdicts for every comparison it makes.

* :func:`rate` — a proportion with its Wilson score interval (Wilson 1927; Agresti & Coull 1998 show it
  keeps close to nominal coverage at small n and near 0 or 1, where the normal interval collapses).
* :func:`paired_difference` — the difference of two models' accuracies on the *same* examples. Only the
  discordant examples carry information (McNemar 1947): with ``b`` examples right for A and wrong for B,
  ``c`` the reverse and ``m = b + c``, the difference is ``(b - c) / n``. Conditional on ``m``,
  ``b ~ Binomial(m, p)`` and "no difference" is ``p = 1/2``. The interval is the Clopper-Pearson interval
  for ``p`` mapped to ``m / n * (2p - 1)``; the p-value is McNemar's exact (two-sided, doubled one-sided
  binomial) test. The central Clopper-Pearson interval excludes ``1/2`` exactly when that test rejects at
  the same level, so the interval, the p-value and the verdict never disagree.
* :func:`spearman` — rank correlation across models with a Fisher-z interval (standard error 1.06 / sqrt(n - 3),
  Fieller, Hartley & Pearson 1957).

Pure functions over plain sequences; no heavy imports.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

BETTER, WORSE, NO_DIFFERENCE = "better", "worse", "no measurable difference"


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence!r} must be in (0, 1)")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


@dataclass(frozen=True)
class Rate:
    """``k`` of ``n`` with its ``confidence`` Wilson interval (fractions in [0, 1]); NaN when ``n`` is 0."""

    k: int
    n: int
    value: float
    low: float
    high: float

    def to_dict(self) -> dict:
        """Plain dict (JSON / MLflow)."""
        return asdict(self)

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


def min_detectable(m: int, n: int, alpha: float = 0.05) -> float | None:
    """The smallest |b - c| / n that McNemar's exact test would call significant with ``m`` discordant
    pairs out of ``n`` examples; ``None`` when no split of ``m`` pairs can be (fewer than 6 at 0.05)."""
    for d in range(m % 2, m + 1, 2):
        if mcnemar_exact((m + d) // 2, (m - d) // 2) < alpha:
            return d / n
    return None


@dataclass(frozen=True)
class PairedDifference:
    """A − B on the same ``n`` examples (fractions), its interval, McNemar's p and the verdict.

    ``a_only``: examples A gets right and B wrong; ``b_only``: the reverse. ``mde``: the smallest
    difference this run's discordant count could have shown (``None``: none could).
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

    def to_dict(self) -> dict:
        """Plain dict (JSON / MLflow)."""
        return asdict(self)

    def pts(self, digits: int = 1) -> str:
        """``"+4.0 [+1.2, +6.9] pts"`` in percentage points."""
        f = f"{{:+.{digits}f}}"
        return f"{f.format(100 * self.diff)} [{f.format(100 * self.low)}, {f.format(100 * self.high)}] pts"


def paired_difference(
    a_correct: Sequence[bool], b_correct: Sequence[bool], confidence: float = 0.95
) -> PairedDifference:
    """Accuracy of A minus accuracy of B on the same examples, with the exact conditional interval.

    The verdict is "better" / "worse" only when the interval excludes 0 (equivalently McNemar's exact
    test rejects at ``1 - confidence``), else "no measurable difference".
    """
    if len(a_correct) != len(b_correct):
        raise ValueError(
            f"paired comparison needs the same examples: {len(a_correct)} vs {len(b_correct)} outcomes"
        )
    n = len(a_correct)
    b = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if x and not y)
    c = sum(1 for x, y in zip(a_correct, b_correct, strict=True) if y and not x)
    m = b + c
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, 0, 0, 1.0, NO_DIFFERENCE, None)
    p_lo, p_hi = clopper_pearson(b, m, confidence)
    low, high = (m / n * (2 * p_lo - 1), m / n * (2 * p_hi - 1)) if m else (0.0, 0.0)
    p = mcnemar_exact(b, c)
    verdict = NO_DIFFERENCE
    if m and p < 1 - confidence:
        verdict = BETTER if b > c else WORSE
    return PairedDifference((b - c) / n, low, high, n, b, c, p, verdict, min_detectable(m, n, 1 - confidence))


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
class Correlation:
    """Spearman's rho over ``n`` pairs with its interval (NaN where undefined)."""

    rho: float
    low: float
    high: float
    n: int

    def to_dict(self) -> dict:
        """Plain dict (JSON / MLflow)."""
        return asdict(self)


def spearman(x: Sequence[float], y: Sequence[float], confidence: float = 0.95) -> Correlation:
    """Spearman's rank correlation with a Fisher-z interval (SE 1.06 / sqrt(n - 3))."""
    if len(x) != len(y):
        raise ValueError(f"spearman needs pairs: {len(x)} x values vs {len(y)} y values")
    n = len(x)
    if n < 3:
        return Correlation(math.nan, math.nan, math.nan, n)
    rx, ry = _ranks(list(x)), _ranks(list(y))
    mx, my = sum(rx) / n, sum(ry) / n
    sxy = sum((a - mx) * (b - my) for a, b in zip(rx, ry, strict=True))
    sxx = sum((a - mx) ** 2 for a in rx)
    syy = sum((b - my) ** 2 for b in ry)
    if sxx == 0 or syy == 0:
        return Correlation(math.nan, math.nan, math.nan, n)
    rho = sxy / math.sqrt(sxx * syy)
    if n < 4 or abs(rho) >= 1:
        return Correlation(rho, math.nan, math.nan, n)
    z, half = math.atanh(rho), _z(confidence) * 1.06 / math.sqrt(n - 3)
    return Correlation(rho, math.tanh(z - half), math.tanh(z + half), n)

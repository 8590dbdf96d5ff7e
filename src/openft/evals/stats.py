"""Means with confidence intervals, percentiles and paired comparisons for eval scores.

Binary scores (every score 0 or 1) get a Wilson interval, which stays inside [0, 1] and behaves at
0% and 100%; continuous scores get a seeded percentile bootstrap (or a t-interval on request).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist, fmean, stdev
from typing import Literal

Method = Literal["auto", "wilson", "bootstrap", "t"]


@dataclass(frozen=True)
class Estimate:
    mean: float
    low: float
    high: float
    n: int
    method: str  # "wilson" | "bootstrap" | "t"
    confidence: float

    def contains(self, value: float) -> bool:
        return self.low <= value <= self.high


def _z(confidence: float) -> float:
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be between 0 and 1, got {confidence}")
    return NormalDist().inv_cdf(0.5 + confidence / 2)


def is_binary(scores: Sequence[float]) -> bool:
    return all(s in (0, 1) for s in scores)


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion successes/n."""
    if n <= 0:
        raise ValueError("wilson_interval needs at least one trial")
    z = _z(confidence)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    # At 0 or n successes the bound is exactly 0 or 1; rounding would leave 1e-17.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


def t_quantile(p: float, df: int) -> float:
    """Student-t quantile: exact for df 1 and 2, Cornish-Fisher expansion (error < 1e-3 at 95%) above."""
    if df == 1:
        return math.tan(math.pi * (p - 0.5))
    if df == 2:
        return (2 * p - 1) / math.sqrt(2 * p * (1 - p))
    z = NormalDist().inv_cdf(p)
    v = df
    return (
        z
        + (z**3 + z) / (4 * v)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * v**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * v**3)
        + (79 * z**9 + 776 * z**7 + 1482 * z**5 - 1920 * z**3 - 945 * z) / (92160 * v**4)
    )


def t_interval(scores: Sequence[float], confidence: float = 0.95) -> tuple[float, float]:
    _z(confidence)  # validates confidence
    mean = fmean(scores)
    if len(scores) < 2:
        return mean, mean
    half = t_quantile(0.5 + confidence / 2, len(scores) - 1) * stdev(scores) / math.sqrt(len(scores))
    return mean - half, mean + half


def bootstrap_interval(
    scores: Sequence[float], confidence: float = 0.95, *, seed: int = 0, n_resamples: int = 2000
) -> tuple[float, float]:
    """Percentile bootstrap of the mean; the same seed gives the same interval."""
    _z(confidence)
    rng = random.Random(seed)
    n = len(scores)
    means = sorted(fmean(rng.choices(scores, k=n)) for _ in range(n_resamples))
    tail = (1 - confidence) / 2
    return means[int(tail * (n_resamples - 1))], means[math.ceil((1 - tail) * (n_resamples - 1))]


def mean_ci(
    scores: Sequence[float],
    confidence: float = 0.95,
    *,
    method: Method = "auto",
    seed: int = 0,
    n_resamples: int = 2000,
) -> Estimate:
    """Mean of the scores and its confidence interval ("auto": Wilson when binary, else bootstrap)."""
    scores = [float(s) for s in scores]
    if not scores:
        raise ValueError("mean_ci needs at least one score")
    if method == "auto":
        method = "wilson" if is_binary(scores) else "bootstrap"
    if method == "wilson":
        if not is_binary(scores):
            raise ValueError("the Wilson interval needs binary (0/1) scores")
        low, high = wilson_interval(sum(scores), len(scores), confidence)
    elif method == "bootstrap":
        low, high = bootstrap_interval(scores, confidence, seed=seed, n_resamples=n_resamples)
    elif method == "t":
        low, high = t_interval(scores, confidence)
    else:
        raise ValueError(f"method must be auto, wilson, bootstrap or t; got {method!r}")
    return Estimate(fmean(scores), low, high, len(scores), method, confidence)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), q in [0, 100]."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be in [0, 100], got {q}")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    below = math.floor(rank)
    above = min(below + 1, len(ordered) - 1)
    return ordered[below] + (ordered[above] - ordered[below]) * (rank - below)


@dataclass(frozen=True)
class Distribution:
    mean: float
    p50: float
    p95: float
    n: int


def summarize(values: Sequence[float]) -> Distribution:
    """Mean, median and 95th percentile, e.g. of latencies or token counts."""
    return Distribution(fmean(values), percentile(values, 50), percentile(values, 95), len(values))


@dataclass(frozen=True)
class PairedComparison:
    """Scores of A minus scores of B on the same examples."""

    mean_difference: float
    low: float
    high: float
    n: int
    wins: int  # examples where A scored higher
    losses: int
    ties: int
    p_value: float  # two-sided exact sign test over the non-tied examples
    confidence: float

    @property
    def significant(self) -> bool:
        """The interval of the difference excludes zero."""
        return self.low > 0 or self.high < 0


def sign_test_p_value(wins: int, losses: int) -> float:
    n = wins + losses
    if n == 0:
        return 1.0
    k = min(wins, losses)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_comparison(
    a: Sequence[float], b: Sequence[float], confidence: float = 0.95, *, seed: int = 0, n_resamples: int = 2000
) -> PairedComparison:
    """Compare two strategies scored on the same examples (bootstrap CI of the mean difference)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_comparison needs at least one pair")
    diffs = [float(x) - float(y) for x, y in zip(a, b, strict=True)]
    low, high = bootstrap_interval(diffs, confidence, seed=seed, n_resamples=n_resamples)
    wins = sum(d > 0 for d in diffs)
    losses = sum(d < 0 for d in diffs)
    return PairedComparison(
        fmean(diffs),
        low,
        high,
        len(diffs),
        wins,
        losses,
        len(diffs) - wins - losses,
        sign_test_p_value(wins, losses),
        confidence,
    )


# McNemar's chi-square (with continuity correction) is a fine approximation once there are enough discordant
# pairs; below this the exact binomial test is used (the usual rule of thumb is 25).
EXACT_MCNEMAR_BELOW = 25


def mcnemar_p_value(a_only: int, b_only: int) -> tuple[float, str]:
    """Two-sided McNemar test on the discordant pairs: (p-value, "exact" | "chi-square").

    a_only: items A gets right and B misses; b_only: the reverse. Under "no difference" each discordant item is a
    fair coin, so for few discordant items the exact binomial test is used (the sign test above).
    """
    n = a_only + b_only
    if n < EXACT_MCNEMAR_BELOW:
        return sign_test_p_value(a_only, b_only), "exact"
    statistic = (abs(a_only - b_only) - 1) ** 2 / n
    return math.erfc(math.sqrt(statistic / 2)), "chi-square"  # survival function of chi-square with 1 df


@dataclass(frozen=True)
class PairedTest:
    """Does A score differently from B on the same items? McNemar for 0/1 scores, a paired bootstrap otherwise."""

    method: str  # "mcnemar-exact" | "mcnemar-chi-square" | "paired-bootstrap"
    mean_difference: float  # mean(A) - mean(B)
    low: float  # confidence interval of the mean difference (paired bootstrap)
    high: float
    p_value: float
    n: int
    a_better: int  # items where A scores higher (binary: A right, B wrong)
    b_better: int
    alpha: float

    @property
    def significant(self) -> bool:
        return self.p_value < self.alpha


def paired_bootstrap_p_value(diffs: Sequence[float], *, seed: int = 0, n_resamples: int = 2000) -> float:
    """Two-sided bootstrap p-value of "mean difference = 0": resample the centred differences (null imposed)."""
    observed = abs(fmean(diffs))
    if observed == 0:
        return 1.0
    centred = [d - fmean(diffs) for d in diffs]
    rng = random.Random(seed)
    n = len(diffs)
    extreme = sum(abs(fmean(rng.choices(centred, k=n))) >= observed for _ in range(n_resamples))
    return (extreme + 1) / (n_resamples + 1)


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    alpha: float = 0.05,
    seed: int = 0,
    n_resamples: int = 2000,
) -> PairedTest:
    """Paired test of two strategies scored on the same items (see PairedTest)."""
    if len(a) != len(b):
        raise ValueError(f"paired scores need equal lengths, got {len(a)} and {len(b)}")
    if not a:
        raise ValueError("paired_test needs at least one pair")
    a, b = [float(x) for x in a], [float(y) for y in b]
    diffs = [x - y for x, y in zip(a, b, strict=True)]
    low, high = bootstrap_interval(diffs, 1 - alpha, seed=seed, n_resamples=n_resamples)
    a_better = sum(d > 0 for d in diffs)
    b_better = sum(d < 0 for d in diffs)
    if is_binary(a) and is_binary(b):
        p_value, kind = mcnemar_p_value(a_better, b_better)
        method = f"mcnemar-{kind}"
    else:
        p_value, method = paired_bootstrap_p_value(diffs, seed=seed, n_resamples=n_resamples), "paired-bootstrap"
    return PairedTest(method, fmean(diffs), low, high, p_value, len(diffs), a_better, b_better, alpha)

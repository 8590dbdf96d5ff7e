"""Confidence intervals, percentiles and paired comparisons against known values."""

import pytest

from openft.evals.stats import (
    mcnemar_p_value,
    mean_ci,
    paired_comparison,
    paired_test,
    percentile,
    sign_test_p_value,
    summarize,
    t_quantile,
    wilson_interval,
)


def test_wilson_known_values():
    low, high = wilson_interval(8, 10)
    assert (low, high) == (pytest.approx(0.4902, abs=1e-4), pytest.approx(0.9433, abs=1e-4))
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and high == pytest.approx(0.2775, abs=1e-4)
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and low == pytest.approx(0.7225, abs=1e-4)


def test_binary_scores_get_wilson_automatically():
    estimate = mean_ci([1, 1, 1, 1, 0, 1, 1, 0, 1, 1])
    assert estimate.method == "wilson" and estimate.mean == 0.8 and estimate.n == 10
    assert estimate.contains(0.8) and 0 <= estimate.low < estimate.high <= 1


def test_continuous_scores_get_a_seeded_bootstrap():
    scores = [0.1, 0.4, 0.35, 0.8, 0.55, 0.6, 0.2, 0.9, 0.45, 0.5]
    first = mean_ci(scores, seed=3)
    assert first.method == "bootstrap" and first == mean_ci(scores, seed=3)
    assert first.low < first.mean < first.high
    assert first.low > 0.3 and first.high < 0.67


def test_t_interval_matches_textbook():
    # mean 5, sd 1.5811, n 5, t(0.975, 4) = 2.7764 -> half-width 1.9632
    estimate = mean_ci([3, 4, 5, 6, 7], method="t")
    assert (estimate.low, estimate.high) == (pytest.approx(3.0368, abs=1e-3), pytest.approx(6.9632, abs=1e-3))
    assert t_quantile(0.975, 10) == pytest.approx(2.2281, abs=1e-3)
    assert t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-3)
    assert t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-3)


def test_mean_ci_rejects_bad_input():
    with pytest.raises(ValueError):
        mean_ci([])
    with pytest.raises(ValueError, match="binary"):
        mean_ci([0.5], method="wilson")
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1, 0], confidence=95)


def test_percentiles_interpolate_like_numpy():
    values = list(range(1, 101))
    assert percentile(values, 50) == 50.5
    assert percentile(values, 95) == pytest.approx(95.05)
    assert percentile([7.0], 95) == 7.0
    latency = summarize([0.2, 0.3, 0.25, 2.0])
    assert latency.p50 == pytest.approx(0.275) and latency.p95 > 1.5 and latency.n == 4


def test_paired_comparison_detects_a_consistent_improvement():
    a = [1, 1, 1, 1, 1, 1, 1, 1, 1, 0] * 3
    b = [0, 0, 1, 0, 0, 1, 0, 0, 1, 0] * 3
    result = paired_comparison(a, b, seed=0)
    assert result.wins == 18 and result.losses == 0 and result.ties == 12
    assert result.mean_difference == pytest.approx(0.6)
    assert result.significant and result.p_value < 0.001


def test_paired_comparison_of_equal_strategies_is_not_significant():
    a = [1, 0, 1, 0, 1, 1, 0, 0]
    b = [0, 1, 0, 1, 1, 1, 0, 0]
    result = paired_comparison(a, b)
    assert not result.significant and result.p_value == 1.0
    with pytest.raises(ValueError, match="equal lengths"):
        paired_comparison([1], [1, 0])


def test_sign_test_exact_values():
    assert sign_test_p_value(5, 0) == pytest.approx(0.0625)
    assert sign_test_p_value(0, 0) == 1.0


def test_mcnemar_exact_for_few_discordant_items_and_chi_square_for_many():
    # Exact: 6 discordant items all one way -> 2 x 0.5^6.
    assert mcnemar_p_value(6, 0) == (pytest.approx(0.03125), "exact")
    assert mcnemar_p_value(3, 3)[0] == 1.0
    # Chi-square with continuity correction: (|30 - 10| - 1)^2 / 40 = 9.025 -> p = 0.00266 (textbook value).
    p, kind = mcnemar_p_value(30, 10)
    assert kind == "chi-square" and p == pytest.approx(0.002663, abs=1e-5)


def test_paired_test_uses_mcnemar_for_binary_scores():
    a = [1] * 86 + [0] * 14
    b = [1] * 80 + [0] * 20  # b misses 6 items a gets right, and gets nothing a misses
    test = paired_test(a, b)
    assert test.method == "mcnemar-exact" and test.a_better == 6 and test.b_better == 0
    assert test.p_value == pytest.approx(0.03125) and test.significant
    assert test.mean_difference == pytest.approx(0.06)


def test_paired_test_uses_a_paired_bootstrap_for_continuous_scores():
    a = [0.5 + 0.01 * (i % 7) for i in range(60)]
    b = [x - 0.05 for x in a]  # every item 0.05 lower: tiny but perfectly consistent
    test = paired_test(a, b)
    assert test.method == "paired-bootstrap" and test.significant and test.p_value < 0.01
    noisy = paired_test([0.2, 0.9, 0.4, 0.6], [0.9, 0.2, 0.6, 0.4])
    assert not noisy.significant

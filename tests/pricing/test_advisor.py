"""Advisor arithmetic with hand-computed numbers.

Hosted: few-shot on gpt-4o-mini, 1000 prompt + 100 completion tokens:
    (1000 x 0.15 + 100 x 0.60) / 1e6 = $0.00021 per request
Fine-tuned ft:gpt-4o-mini, 100 + 100 tokens: (100 x 0.30 + 100 x 1.20) / 1e6 = $0.00015 per request
Training: 1M tokens x 3 epochs x $3/1M = $9. Break-even over 12 months: 9 / (0.00006 x 12) = 12,500 requests/month.
"""

from dataclasses import replace
from decimal import Decimal

import pytest

from openft.pricing import (
    AdvisorInputs,
    LocalCompute,
    StrategyMeasurement,
    break_even_requests_per_month,
    recommend,
    strategy_costs,
    training_cost,
)


@pytest.fixture(autouse=True)
def _isolated_home(openft_home):
    """No user prices.toml leaks in from ~/.openft."""


def few_shot(quality=0.80, ci=(0.75, 0.85)):
    return StrategyMeasurement(
        "few-shot", 1000, 100, mean_latency_s=2.0, quality=quality, quality_ci=ci, hosted_model="gpt-4o-mini"
    )


def fine_tuned(quality=0.82, ci=(0.77, 0.87)):
    return StrategyMeasurement(
        "fine-tuned",
        100,
        100,
        mean_latency_s=0.5,
        quality=quality,
        quality_ci=ci,
        hosted_model="ft:gpt-4o-mini-2024-07-18:acme::abc",
        fine_tuned=True,
    )


def inputs(requests_per_day, strategies=None, **kwargs):
    return AdvisorInputs(
        strategies=strategies or [few_shot(), fine_tuned()],
        requests_per_day=requests_per_day,
        hosted_training_cost=training_cost("gpt-4o-mini", 1_000_000, 3),
        local_training_cost=Decimal("1"),
        local=LocalCompute(price_per_device_hour=Decimal("3.6")),
        **kwargs,
    )


def test_break_even_formula():
    assert break_even_requests_per_month(Decimal(9), Decimal("0.00021"), Decimal("0.00015"), 12) == 12500
    assert break_even_requests_per_month(Decimal(0), Decimal("0.2"), Decimal("0.1"), 12) == 0


def test_break_even_is_none_when_fine_tuning_is_not_cheaper_per_request():
    assert break_even_requests_per_month(Decimal(9), Decimal("0.0001"), Decimal("0.0001"), 12) is None
    assert break_even_requests_per_month(Decimal(9), Decimal("0.0001"), Decimal("0.0002"), 12) is None


def test_hosted_cost_lines():
    costs = {c.strategy.name: c for c in strategy_costs(inputs(1000))}
    hosted = costs["few-shot"].hosted
    assert hosted.per_request == Decimal("0.00021")
    assert hosted.per_1k_requests == Decimal("0.21")
    assert hosted.monthly == Decimal("6.3")  # 30,000 requests/month
    assert hosted.over_horizon == Decimal("75.6")
    ft = costs["fine-tuned"].hosted
    assert ft.one_time == Decimal("9")
    assert ft.over_horizon == Decimal("63")  # 9 + 0.00015 x 30,000 x 12


def test_local_cost_lines_use_latency_device_price_and_concurrency():
    # 2.0 s x $3.6/h / 3600 = $0.002 per request; 0.5 s -> $0.0005.
    costs = {c.strategy.name: c for c in strategy_costs(inputs(1000))}
    assert costs["few-shot"].local.per_request == Decimal("0.002")
    assert costs["fine-tuned"].local.per_request == Decimal("0.0005")
    assert costs["fine-tuned"].local.one_time == Decimal("1")
    batched = replace(inputs(1000), local=LocalCompute(price_per_device_hour=Decimal("3.6"), concurrency=4))
    assert strategy_costs(batched)[0].local.per_request == Decimal("0.0005")


def test_fine_tune_recommended_when_traffic_is_above_break_even():
    rec = recommend(inputs(1000), deployment="hosted")
    assert rec.choice == "fine-tuned"
    assert rec.headline.startswith("Fine-tune")
    (pair,) = rec.break_evens
    assert pair.requests_per_month == 12500
    assert any("12,500 requests/month" in r and "above" in r for r in rec.reasons)


def test_prompting_is_enough_below_break_even_when_quality_is_within_ci():
    rec = recommend(inputs(100), deployment="hosted")  # 3,000 requests/month < 12,500
    assert rec.choice == "few-shot"
    assert rec.headline.startswith("Prompting is enough here")
    assert any("below" in r for r in rec.reasons)
    assert any("within its CI and cheaper" in r for r in rec.reasons)


def test_clearly_better_fine_tune_wins_even_when_it_costs_more():
    strategies = [few_shot(quality=0.60, ci=(0.55, 0.65)), fine_tuned(quality=0.90, ci=(0.86, 0.94))]
    rec = recommend(inputs(100, strategies), deployment="hosted")
    assert rec.choice == "fine-tuned"
    assert any("few-shot scores lower" in r for r in rec.reasons)


def test_worse_fine_tune_is_not_recommended_even_when_cheaper():
    strategies = [few_shot(quality=0.90, ci=(0.86, 0.94)), fine_tuned(quality=0.60, ci=(0.55, 0.65))]
    rec = recommend(inputs(100_000, strategies), deployment="hosted")
    assert rec.choice == "few-shot"
    assert rec.headline.startswith("Prompting is enough here")


def test_local_deployment_break_even():
    # Local: saving $0.0015/request, $1 training, 12 months -> 1 / 0.018 = 55.6 requests/month.
    rec = recommend(inputs(10), deployment="local")
    (pair,) = rec.break_evens
    assert pair.requests_per_month == Decimal(1) / Decimal("0.018")
    assert rec.choice == "fine-tuned"


def test_hosted_mode_skips_strategies_without_a_hosted_model():
    local_only = StrategyMeasurement("zero-shot", 50, 100, mean_latency_s=1.0, quality=0.5)
    rec = recommend(inputs(1000, [local_only, few_shot(), fine_tuned()]), deployment="hosted")
    assert {p.baseline for p in rec.break_evens} == {"few-shot"}
    with pytest.raises(ValueError, match="hosted"):
        recommend(inputs(1000, [local_only]), deployment="hosted")


def test_no_fine_tuned_strategy_gives_plain_choice():
    zero = StrategyMeasurement("zero-shot", 50, 100, 1.0, quality=0.79, hosted_model="gpt-4o-mini")
    rec = recommend(inputs(1000, [zero, few_shot()]), deployment="hosted")
    assert rec.choice == "zero-shot"  # within few-shot's CI (0.75) and cheaper
    assert rec.headline == "Use zero-shot (hosted)."

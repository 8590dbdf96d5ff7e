"""Inference, training and local compute costs, including the seed figures in docs/pricing.md."""

from decimal import Decimal

import pytest

from openft.pricing import (
    UnknownModelPrice,
    estimate_training_cost,
    inference_cost,
    inference_price,
    local_compute_cost,
    lookup_inference_price,
    training_cost,
)


@pytest.fixture(autouse=True)
def _isolated_home(openft_home):
    """No user prices.toml leaks in from ~/.openft."""


def test_training_seed_figure_100k_tokens_3_epochs_gpt35_is_2_40():
    assert training_cost("gpt-3.5-turbo", 100_000, 3) == Decimal("2.40")


@pytest.mark.parametrize(
    ("model", "per_1m"),
    [
        ("gpt-3.5-turbo", "8"),
        ("babbage-002", "0.4"),
        ("davinci-002", "6"),
        ("gpt-4o-mini", "3"),
        ("gpt-4o", "25"),
        ("gpt-4.1", "25"),
        ("gpt-4.1-mini", "5"),
        ("gpt-4.1-nano", "1.5"),
        ("gpt-4o-mini-2024-07-18", "3"),  # dated snapshot trains at its family's price
        ("ft:gpt-4.1-mini-2025-04-14:acme::abc123", "5"),  # continuing a fine-tune: the base's price
    ],
)
def test_training_price_table(model, per_1m):
    assert training_cost(model, 1_000_000, 1) == Decimal(per_1m)


def test_estimate_training_cost_lists_every_known_model_when_none_named():
    estimates = {e.model: e.cost for e in estimate_training_cost(100_000, 3)}
    assert estimates["gpt-3.5-turbo"] == Decimal("2.4")
    assert estimates["gpt-4o-mini"] == Decimal("0.9")
    assert {"babbage-002", "davinci-002", "gpt-4.1-nano"} <= set(estimates)


def test_unknown_training_model_error_names_it():
    with pytest.raises(UnknownModelPrice, match="smollm2-135m-instruct.*prices.toml"):
        training_cost("smollm2-135m-instruct", 1000, 1)


def test_gpt35_4k_conversation_costs_0_0035():
    # 1,000 in / 1,000 out at $0.0015/1K in and $0.002/1K out.
    assert inference_cost("gpt-3.5-turbo-4k", 1000, 1000) == Decimal("0.0035")
    # genai-prices lists the same legacy price under the 0613 snapshot name.
    assert inference_cost("gpt-3.5-turbo-0613", 1000, 1000) == Decimal("0.0035")


def test_plain_gpt35_is_todays_0125_price_from_genai_prices():
    price = lookup_inference_price("gpt-3.5-turbo")
    assert (price.input_per_1m, price.output_per_1m) == (Decimal("0.5"), Decimal("1.5"))
    assert price.source.startswith("genai-prices")
    assert inference_cost("gpt-3.5-turbo", 1000, 1000) == Decimal("0.002")


def test_legacy_fine_tuned_gpt35_conversation_costs_0_028():
    # $0.012/1K in, $0.016/1K out, before any training cost.
    assert inference_cost("ft:gpt-3.5-turbo-0613:acme::8abc", 1000, 1000) == Decimal("0.028")
    assert inference_cost("ft:gpt-3.5-turbo-4k", 1000, 1000) == Decimal("0.028")


def test_current_fine_tuned_gpt35_uses_genai_prices():
    assert inference_price("ft:gpt-3.5-turbo-0125:acme::8abc") == (Decimal("3"), Decimal("6"))


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o-mini", ("0.15", "0.6")),
        ("ft:gpt-4o-mini-2024-07-18:acme:support:AbC123", ("0.3", "1.2")),
        ("ft:gpt-4o-2024-08-06:acme::x", ("3.75", "15")),
        ("ft:gpt-4.1-2025-04-14:acme::x", ("3", "12")),
        ("ft:gpt-4.1-mini-2025-04-14:acme::x", ("0.8", "3.2")),
        ("ft:gpt-4.1-nano-2025-04-14:acme::x", ("0.2", "0.8")),
        ("ft:davinci-002:acme::x", ("12", "12")),
        ("ft:babbage-002:acme::x", ("1.6", "1.6")),
    ],
)
def test_inference_price_per_million(model, expected):
    assert inference_price(model) == (Decimal(expected[0]), Decimal(expected[1]))


def test_mean_token_counts_are_priced_pro_rata():
    assert inference_cost("gpt-4o-mini", 1500.5, 0) == Decimal("1500.5") * Decimal("0.15") / 1_000_000


def test_unknown_inference_model_error_names_the_model():
    with pytest.raises(UnknownModelPrice) as info:
        inference_cost("ft:smollm2-135m-instruct:org::abc", 10, 10)
    assert "ft:smollm2-135m-instruct:org::abc" in str(info.value)
    assert "prices.toml" in str(info.value)


def test_pricing_never_starts_the_online_price_updater():
    from genai_prices import data_snapshot

    inference_cost("gpt-4o", 10, 10)
    assert data_snapshot.get_snapshot().from_auto_update is False


def test_local_compute_cost_defaults():
    # One GPU-hour at the default H100 price; two vCPUs for half an hour.
    assert local_compute_cost(3600, "gpu") == Decimal("2.99")
    assert local_compute_cost(1800, "cpu", n_devices=2) == Decimal("0.0504")


def test_local_compute_cost_rejects_bad_device_and_count():
    with pytest.raises(ValueError, match="tpu"):
        local_compute_cost(10, "tpu")
    with pytest.raises(ValueError, match="n_devices"):
        local_compute_cost(10, "cpu", n_devices=0)

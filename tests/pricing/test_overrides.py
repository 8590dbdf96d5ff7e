"""A user's $OPENFT_HOME/prices.toml (or .json) overrides and extends the built-in prices."""

import json
from decimal import Decimal

import pytest

from openft.pricing import (
    PriceFileError,
    estimate_training_cost,
    inference_cost,
    inference_price,
    local_compute_cost,
    lookup_inference_price,
    training_cost,
)


def test_toml_overrides_training_inference_and_compute(openft_home):
    (openft_home.home / "prices.toml").write_text(
        """
[training]
"gpt-4o-mini" = 2.5
"my-hosted-model" = 1

[inference]
"gpt-4o-mini" = { input = 0.1, output = 0.2 }
"ft:smollm2-135m-instruct" = { input = 0.01, output = 0.02 }

[compute]
gpu_hour = 2.0
"""
    )
    assert training_cost("gpt-4o-mini", 1_000_000, 2) == Decimal("5.0")
    assert training_cost("gpt-3.5-turbo", 100_000, 3) == Decimal("2.4")  # untouched entries remain
    assert "my-hosted-model" in {e.model for e in estimate_training_cost(1000, 1)}
    assert inference_price("gpt-4o-mini") == (Decimal("0.1"), Decimal("0.2"))
    assert inference_cost("ft:smollm2-135m-instruct:org::abcd1234", 1_000_000, 1_000_000) == Decimal("0.03")
    assert lookup_inference_price("gpt-4o-mini").source.endswith("prices.toml")
    assert local_compute_cost(3600, "gpu") == Decimal("2.0")
    assert local_compute_cost(3600, "cpu") == Decimal("0.0504")


def test_json_file_is_read_when_there_is_no_toml(openft_home):
    (openft_home.home / "prices.json").write_text(json.dumps({"training": {"gpt-4o": 20}}))
    assert training_cost("gpt-4o", 1_000_000, 1) == Decimal("20")


def test_edit_takes_effect_without_restart(openft_home):
    path = openft_home.home / "prices.toml"
    path.write_text('[training]\n"gpt-4o" = 20\n')
    assert training_cost("gpt-4o", 1_000_000, 1) == Decimal("20")
    path.write_text('[training]\n"gpt-4o" = 21.5\n')
    assert training_cost("gpt-4o", 1_000_000, 1) == Decimal("21.5")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[training]\n"gpt-4o" = "cheap"\n', "training.gpt-4o must be a non-negative number"),
        ('[training]\n"gpt-4o" = -1\n', "training.gpt-4o"),
        ('[inference]\n"x" = 1\n', "inference.x must be"),
        ("[compute]\ntpu_hour = 1\n", "tpu_hour"),
        ("[trainig]\n", "unknown section"),
        ("[training\n", "not valid TOML"),
    ],
)
def test_bad_price_file_errors_name_the_file_and_key(openft_home, text, message):
    (openft_home.home / "prices.toml").write_text(text)
    with pytest.raises(PriceFileError, match=message) as info:
        training_cost("gpt-4o", 1, 1)
    assert "prices.toml" in str(info.value)

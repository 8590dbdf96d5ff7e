"""What tokens and compute cost: inference, OpenAI training, and local device time (USD, Decimal)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

import genai_prices
from genai_prices import data_snapshot
from genai_prices.types import TieredPrices

from openft.pricing.overrides import load_overrides
from openft.pricing.tables import INFERENCE_PER_1M, PER_MILLION, TRAINING_PER_1M, TokenPrice

Number = int | float | Decimal

# A dated snapshot suffix: gpt-3.5-turbo-0613, gpt-4o-mini-2024-07-18.
_SNAPSHOT = re.compile(r"-(\d{4}-\d{2}-\d{2}|\d{4})$")


class UnknownModelPrice(KeyError):
    """No price is known for this model; the message says where openft looked."""

    def __init__(self, model: str, kind: str, hint: str):
        super().__init__(model)
        self.model = model
        self.message = f"no {kind} price known for model {model!r}; {hint}"

    def __str__(self) -> str:
        return self.message


@dataclass(frozen=True)
class InferencePrice:
    model: str
    input_per_1m: Decimal
    output_per_1m: Decimal
    source: str  # "prices.toml", "openft table" or "genai-prices <version> (<provider>:<model id>)"
    genai_provider: str | None = None  # set when genai-prices priced it, so costs can use its tiers


def _decimal(value: Number) -> Decimal:
    if isinstance(value, bool) or value < 0:
        raise ValueError(f"expected a non-negative number, got {value!r}")
    return value if isinstance(value, Decimal) else Decimal(str(value))


def candidate_keys(model: str) -> list[str]:
    """Table keys that may price `model`, most specific first.

    `ft:gpt-4o-mini-2024-07-18:org:suffix:id` -> ["ft:gpt-4o-mini-2024-07-18", "ft:gpt-4o-mini"].
    """
    name = model.strip().lower()
    prefix = ""
    if name.startswith("ft:"):
        prefix, name = "ft:", name[3:].split(":", 1)[0]
    keys = [prefix + name]
    undated = _SNAPSHOT.sub("", name)
    if undated != name:
        keys.append(prefix + undated)
    return keys


def lookup_inference_price(model: str) -> InferencePrice:
    """User overrides, then openft's table, then genai-prices' bundled snapshot (never fetched online)."""
    overrides = load_overrides()
    keys = candidate_keys(model)
    for table, source in ((overrides.inference_per_1m, str(overrides.path)), (INFERENCE_PER_1M, "openft table")):
        for key in keys:
            if key in table:
                price: TokenPrice = table[key]
                return InferencePrice(model, price.input_per_1m, price.output_per_1m, source)
    found = _genai_price(model)
    if found is None:
        raise UnknownModelPrice(
            model,
            "inference",
            "add it under [inference] in $OPENFT_HOME/prices.toml (see docs/pricing.md)",
        )
    return found


def _genai_model(model: str):
    # OpenAI first: without a provider genai-prices may pick another provider that lists the same
    # name (e.g. a subscription product that prices gpt-3.5-turbo at zero).
    snapshot = data_snapshot.get_snapshot()
    for provider_id in ("openai", None):
        try:
            return snapshot.find_provider_model(model, None, provider_id, None)
        except LookupError:
            continue
    return None


def _genai_price(model: str) -> InferencePrice | None:
    found = _genai_model(model)
    if found is None:
        return None
    provider, info = found
    prices = info.get_prices(datetime.now(tz=UTC))
    input_price, output_price = getattr(prices, "input_mtok", None), getattr(prices, "output_mtok", None)
    if input_price is None or output_price is None:
        return None
    # Tiered prices: the base tier is what ordinary-length requests pay.
    input_price = input_price.base if isinstance(input_price, TieredPrices) else input_price
    output_price = output_price.base if isinstance(output_price, TieredPrices) else output_price
    source = f"genai-prices {genai_prices.__version__} ({provider.id}:{info.id})"
    return InferencePrice(model, Decimal(input_price), Decimal(output_price), source, provider.id)


def inference_price(model: str) -> tuple[Decimal, Decimal]:
    """(USD per 1M input tokens, USD per 1M output tokens). Raises UnknownModelPrice."""
    price = lookup_inference_price(model)
    return price.input_per_1m, price.output_per_1m


def inference_cost(model: str, input_tokens: Number, output_tokens: Number) -> Decimal:
    """USD for one call (or a total) of `input_tokens` in and `output_tokens` out.

    Means over many calls are fine: fractional token counts are priced pro rata.
    """
    price = lookup_inference_price(model)
    if price.genai_provider is not None and isinstance(input_tokens, int) and isinstance(output_tokens, int):
        # Whole calls go through genai-prices itself, which applies long-context price tiers.
        usage = genai_prices.Usage(input_tokens=input_tokens, output_tokens=output_tokens)
        return genai_prices.calc_price(usage, model, provider_id=price.genai_provider).total_price
    return (_decimal(input_tokens) * price.input_per_1m + _decimal(output_tokens) * price.output_per_1m) / PER_MILLION


def training_price(model: str) -> Decimal:
    """USD per 1M trained tokens for fine-tuning `model` (a base or an ft: model, which trains at its base's
    price)."""
    overrides = load_overrides()
    keys = [key.removeprefix("ft:") for key in candidate_keys(model)]
    for table in (overrides.training_per_1m, TRAINING_PER_1M):
        for key in keys:
            if key in table:
                return table[key]
    known = ", ".join(sorted({*TRAINING_PER_1M, *overrides.training_per_1m}))
    raise UnknownModelPrice(model, "training", f"known: {known}; add it under [training] in $OPENFT_HOME/prices.toml")


def training_cost(model: str, billable_tokens_per_epoch: Number, n_epochs: Number) -> Decimal:
    """What OpenAI charges: tokens in the training file x epochs x the model's training price."""
    return _decimal(billable_tokens_per_epoch) * _decimal(n_epochs) * training_price(model) / PER_MILLION


@dataclass(frozen=True)
class TrainingCostEstimate:
    model: str
    billable_tokens: int
    n_epochs: int
    price_per_1m: Decimal
    cost: Decimal


def training_models() -> list[str]:
    """Every model with a known training price (built-in and user-added), sorted."""
    return sorted({*TRAINING_PER_1M, *load_overrides().training_per_1m})


def estimate_training_cost(
    billable_tokens: int, n_epochs: int, models: list[str] | None = None
) -> list[TrainingCostEstimate]:
    """What OpenAI would charge to train on this file, per model (all known models when none are named)."""
    return [
        TrainingCostEstimate(
            model=model,
            billable_tokens=billable_tokens,
            n_epochs=n_epochs,
            price_per_1m=training_price(model),
            cost=training_cost(model, billable_tokens, n_epochs),
        )
        for model in (models if models is not None else training_models())
    ]


def compute_price_per_hour(device: str) -> Decimal:
    """USD per device-hour for 'cpu' (one vCPU) or 'gpu' (one GPU), after user overrides."""
    return load_overrides().compute.per_hour(device)


def local_compute_cost(seconds: Number, device: str = "cpu", n_devices: int = 1) -> Decimal:
    """USD for holding `n_devices` devices (vCPUs or GPUs) for `seconds` of wall-clock time."""
    if n_devices < 1:
        raise ValueError(f"n_devices must be at least 1, got {n_devices}")
    return _decimal(seconds) * n_devices * compute_price_per_hour(device) / Decimal(3600)

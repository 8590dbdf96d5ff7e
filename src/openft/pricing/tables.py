"""Built-in price tables openft ships (USD). Sources are in docs/pricing.md.

genai-prices supplies most inference prices; this module only holds what it lacks or prices
differently from what openft's reports need: OpenAI *training* prices, inference prices of
fine-tuned models it does not list, the legacy 4K-context gpt-3.5-turbo prices, and local compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

PER_MILLION = Decimal(1_000_000)


@dataclass(frozen=True)
class TokenPrice:
    """Inference price in USD per 1M tokens."""

    input_per_1m: Decimal
    output_per_1m: Decimal


# OpenAI fine-tuning training prices, USD per 1M trained tokens (tokens in the file x epochs).
TRAINING_PER_1M: dict[str, Decimal] = {
    "gpt-3.5-turbo": Decimal("8"),  # $0.008 / 1K
    "babbage-002": Decimal("0.4"),  # $0.0004 / 1K
    "davinci-002": Decimal("6"),  # $0.006 / 1K
    "gpt-4o-mini": Decimal("3"),
    "gpt-4o": Decimal("25"),
    "gpt-4.1": Decimal("25"),
    "gpt-4.1-mini": Decimal("5"),
    "gpt-4.1-nano": Decimal("1.5"),
}

# Inference prices consulted before genai-prices. Keys are model names, or "ft:<base>" for any
# model fine-tuned from <base> (a dated snapshot suffix such as -0613 or -2025-04-14 may be dropped).
INFERENCE_PER_1M: dict[str, TokenPrice] = {
    # genai-prices prices plain "gpt-3.5-turbo" as today's gpt-3.5-turbo-0125 ($0.50/$1.50). The
    # 2023 4K-context model cost $0.0015/1K in and $0.002/1K out; this name keeps that figure reachable.
    "gpt-3.5-turbo-4k": TokenPrice(Decimal("1.5"), Decimal("2")),
    # Fine-tuned gpt-3.5-turbo at launch (Aug 2023, 4K context, base gpt-3.5-turbo-0613): $0.012/1K in,
    # $0.016/1K out. genai-prices lists every ft:gpt-3.5-turbo* at the later $3/$6.
    "ft:gpt-3.5-turbo-0613": TokenPrice(Decimal("12"), Decimal("16")),
    "ft:gpt-3.5-turbo-4k": TokenPrice(Decimal("12"), Decimal("16")),
    # Fine-tuned models genai-prices does not list.
    "ft:gpt-4.1": TokenPrice(Decimal("3"), Decimal("12")),
    "ft:gpt-4.1-mini": TokenPrice(Decimal("0.8"), Decimal("3.2")),
    "ft:gpt-4.1-nano": TokenPrice(Decimal("0.2"), Decimal("0.8")),
    "ft:babbage-002": TokenPrice(Decimal("1.6"), Decimal("1.6")),
    "ft:davinci-002": TokenPrice(Decimal("12"), Decimal("12")),
}


@dataclass(frozen=True)
class ComputePrices:
    """Local compute prices in USD per device-hour (one vCPU, or one GPU)."""

    cpu_hour: Decimal = Decimal("0.0504")  # AWS m7i.large on-demand, us-east-1: $0.1008/h for 2 vCPU
    gpu_hour: Decimal = Decimal("2.99")  # Lambda on-demand H100 SXM, per GPU-hour

    def per_hour(self, device: str) -> Decimal:
        if device == "cpu":
            return self.cpu_hour
        if device == "gpu":
            return self.gpu_hour
        raise ValueError(f"device must be 'cpu' or 'gpu', got {device!r}")


DEFAULT_COMPUTE_PRICES = ComputePrices()

"""What OpenAI would charge to train on a validated file: shown in the validation report and at job creation.

OpenAI bills the file's tokens (counted with the model family's tokenizer) x epochs x the training price.
The validation report already counts the file with both OpenAI encodings (report["openai_tokens"]).
"""

from __future__ import annotations

from typing import Any

from openft.pricing.costs import training_cost, training_models, training_price

# gpt-4o and later use o200k_base; gpt-3.5-turbo and the legacy completion models use cl100k_base.
_O200K_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-5", "o1", "o3", "o4")


def encoding_for(model: str) -> str:
    return "o200k_base" if model.removeprefix("ft:").startswith(_O200K_PREFIXES) else "cl100k_base"


def training_cost_estimates(validation_report: dict[str, Any], n_epochs: int) -> list[dict[str, Any]]:
    """One estimate per model with a known training price: billable tokens, epochs, USD per 1M, USD total.

    `validation_report` is a ValidationReport as stored on the file (model_dump(mode="json")); an empty list when
    it has no OpenAI token counts (e.g. the file failed validation).
    """
    counts = validation_report.get("openai_tokens") or {}
    estimates = []
    for model in training_models():
        encoding = encoding_for(model)
        tokens = (counts.get(encoding) or {}).get("total_tokens")
        if tokens is None:
            continue
        estimates.append(
            {
                "model": model,
                "encoding": encoding,
                "billable_tokens_per_epoch": tokens,
                "n_epochs": n_epochs,
                "price_per_1m": float(training_price(model)),
                "cost_usd": float(training_cost(model, tokens, n_epochs)),
            }
        )
    return estimates

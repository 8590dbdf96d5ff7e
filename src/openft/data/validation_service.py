"""Validate a stored training file against a base model and summarise it for the file record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openft.data.validate import validate_file
from openft.models.registry import ModelNotFound, get_base_model, load_tokenizer
from openft.pricing.estimates import training_cost_estimates
from openft.training.hyperparameters import default_n_epochs


class UnknownValidationModel(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown base model '{name}' for validation.")
        self.name = name


@dataclass(frozen=True)
class ValidationOutcome:
    status: str  # "processed" | "error"
    status_details: str | None
    report: dict[str, Any]


def validate_training_file(path: Path, model: str) -> ValidationOutcome:
    try:
        base = get_base_model(model)
    except ModelNotFound:
        raise UnknownValidationModel(model) from None
    report = validate_file(
        path, tokenizer=load_tokenizer(base.name), context_length=base.context_length, base_model=base.name
    )
    body = report.model_dump(mode="json")
    if report.ok:
        # What OpenAI would charge to train on this file with the default ("auto") number of epochs.
        n_epochs = default_n_epochs(report.stats.n_valid)
        body["training_cost_estimates"] = training_cost_estimates(body, n_epochs)
    if report.ok:
        return ValidationOutcome("processed", None, body)
    return ValidationOutcome("error", report.summary(), body)

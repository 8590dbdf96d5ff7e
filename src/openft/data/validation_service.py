"""Validate a stored training file against a base model and summarise it for the file record.

`validate_training_file` does the work in the calling process; uploads run it in a worker process with a
time budget through `openft.data.validation_pool`. The heavy imports (tokenizer stack, moderation) happen
inside the functions, so the API process can import this module for its types without paying for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


class UnknownValidationModel(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Unknown base model '{name}' for validation.")
        self.name = name

    def __reduce__(self):  # pickled across the worker process boundary: rebuild from the name, not the message
        return (UnknownValidationModel, (self.name,))


@dataclass(frozen=True)
class ValidationOutcome:
    status: str  # "processed" | "error"
    status_details: str | None
    report: dict[str, Any]


def resolve_validation_model(model: str):
    """The registry entry of `model`; raises UnknownValidationModel."""
    from openft.models.registry import ModelNotFound, get_base_model

    try:
        return get_base_model(model)
    except ModelNotFound:
        raise UnknownValidationModel(model) from None


def validate_training_file(path: Path, model: str, *, deadline: float | None = None) -> ValidationOutcome:
    """`deadline` (a time.monotonic() value): stop after the line being checked when it passes; the outcome is
    then an error whose report covers the lines checked so far (code `validation_timeout`)."""
    from openft.data.validate import validate_file
    from openft.models.registry import load_tokenizer

    base = resolve_validation_model(model)
    report = validate_file(
        path,
        tokenizer=load_tokenizer(base.name),
        context_length=base.context_length,
        base_model=base.name,
        deadline=deadline,
    )
    body = report.model_dump(mode="json")
    if report.ok:
        from openft.pricing.estimates import training_cost_estimates
        from openft.training.hyperparameters import default_n_epochs

        # What OpenAI would charge to train on this file with the default ("auto") number of epochs.
        n_epochs = default_n_epochs(report.stats.n_valid)
        body["training_cost_estimates"] = training_cost_estimates(body, n_epochs)
        return ValidationOutcome("processed", None, body)
    return ValidationOutcome("error", report.summary(), body)


def timed_out_outcome(budget: float) -> ValidationOutcome:
    """The outcome of a validation whose worker was stopped mid-line (no partial report came back)."""
    from openft.data.report import ValidationReport
    from openft.data.validate import timeout_error

    report = ValidationReport(ok=False, n_errors=1, error_counts={"validation_timeout": 1},
                              errors=[timeout_error(budget, None)])
    return ValidationOutcome("error", report.summary(), report.model_dump(mode="json"))

"""The `method.reinforcement` section of a job request, checked as OpenAI's types define it.

The grader is checked by the one grader engine (openft.graders), so a bad field is a 400 naming
`method.reinforcement.grader.<field>`. What openft cannot honour is refused by name, never ignored.
"""

from __future__ import annotations

from typing import Any

from openft.graders import GraderSpecError, check_grader
from openft.graders.spec import sub_graders
from openft.training.job_requests import JobRequestError

SECTION = "method.reinforcement"
SECTION_KEYS = ("grader", "hyperparameters")
RFT_GRADER_TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")  # OpenAI's RFT union
MODEL_GRADERS = ("score_model", "label_model")


def _refuse_model_graders(grader: dict[str, Any], where: str) -> None:
    """A model judge would need a second model served inside the training process; openft does not do that yet."""
    if grader["type"] in MODEL_GRADERS:
        raise JobRequestError(
            f"{where}.type",
            f"A {grader['type']} grader is not supported for reinforcement fine-tuning on openft: the judge model "
            "would have to run inside the training process. Use string_check, text_similarity, python or a multi "
            "grader of those (model graders work in /v1/evals and the graders API).",
        )
    if grader["type"] == "multi":
        for name, sub in (sub_graders(grader) or {}).items():
            _refuse_model_graders(sub, f"{where}.graders.{name}")


def check_reinforcement(section: dict[str, Any]) -> dict[str, Any]:
    """`{"grader": ..., "hyperparameters": ...}` as stored on the job; JobRequestError names what is wrong."""
    unknown = sorted(set(section) - set(SECTION_KEYS))
    if unknown:
        hint = " openft's models are sampled as plain text." if unknown[0] == "response_format" else ""
        raise JobRequestError(f"{SECTION}.{unknown[0]}", f"Unrecognized parameter '{SECTION}.{unknown[0]}'.{hint}")
    if "grader" not in section:
        raise JobRequestError(f"{SECTION}.grader", f"Missing required parameter: '{SECTION}.grader'.")
    try:
        grader = check_grader(section["grader"], f"{SECTION}.grader")
    except GraderSpecError as error:
        raise JobRequestError(error.param, error.message) from None
    if grader["type"] not in RFT_GRADER_TYPES:
        raise JobRequestError(
            f"{SECTION}.grader.type",
            f"A {grader['type']} grader cannot be a reinforcement fine-tuning reward; use one of "
            f"{', '.join(RFT_GRADER_TYPES)}.",
        )
    _refuse_model_graders(grader, f"{SECTION}.grader")
    hyperparameters = section.get("hyperparameters") or {}
    if not isinstance(hyperparameters, dict):
        raise JobRequestError(f"{SECTION}.hyperparameters", "`hyperparameters` must be an object.")
    return {"grader": grader, "hyperparameters": dict(hyperparameters)}

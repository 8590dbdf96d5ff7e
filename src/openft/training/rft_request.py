"""The `method.reinforcement` section of a job request, checked as OpenAI's types define it.

The grader is checked by the one grader engine (openft.graders), so a bad field is a 400 naming
`method.reinforcement.grader.<field>`. What openft cannot honour is refused by name, never ignored.
A score_model / label_model judge must be a model openft serves to the organization or one it registered an
endpoint for (checked at job creation with the organization known: `check_judge_models`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from openft.graders import GraderSpecError, check_grader
from openft.graders.spec import sub_graders
from openft.models.registry import ModelNotFound, get_base_model
from openft.store import jobs as job_store
from openft.training.job_requests import JobRequestError

SECTION = "method.reinforcement"
SECTION_KEYS = ("grader", "hyperparameters")
# OpenAI's RFT grader union (openai/types/fine_tuning/reinforcement_method.py): label_model only inside a multi grader
RFT_GRADER_TYPES = ("string_check", "text_similarity", "python", "score_model", "multi")
MODEL_GRADERS = ("score_model", "label_model")


def judged_models(grader: dict[str, Any], where: str = f"{SECTION}.grader") -> list[tuple[str, str]]:
    """(parameter, judge model) of each score_model / label_model grader, a multi grader's parts included."""
    if grader["type"] in MODEL_GRADERS:
        return [(f"{where}.model", grader["model"])]
    if grader["type"] == "multi":
        return [found for name, sub in (sub_graders(grader) or {}).items()
                for found in judged_models(sub, f"{where}.graders.{name}")]  # fmt: skip
    return []


def check_judge_models(session: Session, organization_id: str, grader: dict[str, Any]) -> None:
    """Each judge must be a model openft serves to the organization (base, `ft:`, checkpoint) or one the
    organization registered an endpoint for, as the graders API requires (api/graders.py `check_judges`)."""
    from openft.evals.judge_endpoints import find as find_endpoint

    for param, model in judged_models(grader):
        if find_endpoint(session, organization_id, model) is None and not _served(session, organization_id, model):
            raise JobRequestError(
                param,
                f"The judge model `{model}` does not exist or you do not have access to it: name a base model, one "
                "of your fine-tuned models or checkpoints, or register an endpoint for it with "
                "POST /v1/fine_tuning/alpha/graders/judge_endpoints.",
                "model_not_found",
            )


def _served(session: Session, organization_id: str, model: str) -> bool:
    try:
        get_base_model(model)
        return True
    except ModelNotFound:
        pass
    return (job_store.get_fine_tuned_model(session, organization_id, model) is not None
            or job_store.get_checkpoint_by_model(session, organization_id, model) is not None)  # fmt: skip


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
            f"{', '.join(RFT_GRADER_TYPES)}" + (" (as OpenAI allows, a label_model grader can be one of a multi "
                                                "grader's graders)." if grader["type"] == "label_model" else "."),
        )
    hyperparameters = section.get("hyperparameters") or {}
    if not isinstance(hyperparameters, dict):
        raise JobRequestError(f"{SECTION}.hyperparameters", "`hyperparameters` must be an object.")
    return {"grader": grader, "hyperparameters": dict(hyperparameters)}

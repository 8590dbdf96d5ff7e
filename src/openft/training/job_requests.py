"""Rules for creating a fine-tuning job: every parameter is checked before anything is queued.

Errors carry the exact OpenAI ``param`` path, so the API can answer 400 that names it.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from openft.jobs import queue
from openft.models.registry import ModelNotFound, get_base_model
from openft.store import files as file_store
from openft.store import jobs as job_store
from openft.store.ids import new_id
from openft.store.pagination import new_seq
from openft.store.quotas import check_active_jobs
from openft.store.tables import FineTuningJob
from openft.training.hyperparameters import validate_hyperparameters
from openft.training.queue_kinds import VALIDATE

MAX_SEED = 2_147_483_647
MAX_METADATA_PAIRS = 16
SUFFIX_PATTERN = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
FORMAT_FOR_METHOD = {"supervised": ("chat", "completion"), "dpo": ("dpo",), "reinforcement": ("rft",)}


class JobRequestError(ValueError):
    def __init__(self, param: str | None, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.param = param
        self.message = message
        self.code = code


@dataclass
class JobRequest:
    model: str
    training_file: str
    validation_file: str | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, Any] | None = None
    integrations: list[Any] | None = None
    hyperparameters: dict[str, Any] | None = None  # deprecated top-level form
    method: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def normalise_method(request: JobRequest) -> dict[str, Any]:
    """One shape for both the deprecated ``hyperparameters`` and ``method`` forms."""
    if request.method is not None and request.hyperparameters is not None:
        raise JobRequestError(
            "hyperparameters", "Send hyperparameters inside `method` or at the top level (deprecated), not both."
        )
    if request.method is None:
        hyperparameters = request.hyperparameters or {}
        if not isinstance(hyperparameters, dict):
            raise JobRequestError("hyperparameters", "`hyperparameters` must be an object.")
        return {"type": "supervised", "supervised": {"hyperparameters": hyperparameters}}
    if not isinstance(request.method, dict):
        raise JobRequestError("method", "`method` must be an object.")
    method_type = request.method.get("type")
    if method_type not in FORMAT_FOR_METHOD:
        raise JobRequestError("method.type", "`method.type` must be `supervised`, `dpo` or `reinforcement`.")
    section = request.method.get(method_type) or {}
    if not isinstance(section, dict):
        raise JobRequestError(f"method.{method_type}", f"`method.{method_type}` must be an object.")
    hyperparameters = section.get("hyperparameters") or {}
    if method_type == "reinforcement":
        from openft.training.rft_request import check_reinforcement  # the grader and RFT-only checks

        return {"type": method_type, method_type: check_reinforcement(section)}
    return {"type": method_type, method_type: {"hyperparameters": dict(hyperparameters)}}


def _check_file(session: Session, organization_id: str, file_id: Any, param: str, method_type: str) -> None:
    if not isinstance(file_id, str) or not file_id:
        raise JobRequestError(param, f"`{param}` must be a file id.")
    row = file_store.get_file(session, organization_id, file_id)
    if row is None:
        raise JobRequestError(param, f"Invalid file id '{file_id}' for `{param}`: no such file.", "invalid_file")
    if row.purpose != "fine-tune":
        raise JobRequestError(
            param, f"File {file_id} has purpose '{row.purpose}'; upload it with purpose 'fine-tune'.", "invalid_file"
        )
    if row.status != "processed" and not (param == "validation_file" and only_too_few_examples(row.validation)):
        detail = f": {row.status_details}" if row.status_details else ""
        raise JobRequestError(
            param,
            f"File {file_id} did not pass validation{detail} See GET /v1/files/{file_id}/validation.",
            "invalid_file",
        )
    data_format = (row.validation or {}).get("format")
    allowed = FORMAT_FOR_METHOD[method_type]
    if method_type == "reinforcement" and data_format == "chat":
        raise JobRequestError(
            param,
            f"File {file_id} holds chat examples that end with an assistant answer, but reinforcement fine-tuning "
            "needs prompts: each line's messages must end with a user or developer message, with the fields the "
            "grader reads beside them.",
            "invalid_file",
        )
    if data_format not in allowed:
        raise JobRequestError(
            param,
            f"File {file_id} holds {data_format} examples, but method `{method_type}` needs "
            f"{' or '.join(allowed)} examples.",
            "invalid_file",
        )
    from openft.training.moderation_gate import check_file_for_job

    check_file_for_job(session, organization_id, row, param)  # the organization's moderation policy


def only_too_few_examples(report: dict[str, Any] | None) -> bool:
    """A validation file may be small: the 10-example minimum applies to training data only."""
    errors = (report or {}).get("errors") or []
    return bool(errors) and all(error.get("code") == "too_few_examples" for error in errors)


def _check_metadata(metadata: Any) -> None:
    if metadata is None:
        return
    if not isinstance(metadata, dict):
        raise JobRequestError("metadata", "`metadata` must be an object of string keys and string values.")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise JobRequestError("metadata", f"`metadata` may hold at most {MAX_METADATA_PAIRS} pairs.")
    for key, value in metadata.items():
        if len(key) > 64:
            raise JobRequestError(f"metadata.{key[:20]}", "Metadata keys may be at most 64 characters.")
        if not isinstance(value, str) or len(value) > 512:
            raise JobRequestError(f"metadata.{key}", "Metadata values must be strings of at most 512 characters.")


def _check_integrations(integrations: Any) -> None:
    if integrations is None:
        return
    if not isinstance(integrations, list):
        raise JobRequestError("integrations", "`integrations` must be a list.")
    for index, item in enumerate(integrations):
        if not isinstance(item, dict) or item.get("type") != "wandb" or not isinstance(item.get("wandb"), dict):
            raise JobRequestError(
                f"integrations[{index}]",
                'Each integration must look like {"type": "wandb", "wandb": {"project": ...}}.',
            )
        if not isinstance(item["wandb"].get("project"), str):
            raise JobRequestError(f"integrations[{index}].wandb.project", "`wandb.project` is required.")


def create_job(session: Session, organization_id: str, request: JobRequest) -> FineTuningJob:
    if request.extra:
        name = sorted(request.extra)[0]
        raise JobRequestError(name, f"Unrecognized request argument supplied: {name}")
    if not isinstance(request.model, str) or not request.model:
        raise JobRequestError("model", "`model` is required.")
    try:
        base = get_base_model(request.model)
    except ModelNotFound:
        raise JobRequestError(
            "model",
            f"Model '{request.model}' is not available for fine-tuning. List base models with GET /v1/models.",
            "model_not_available",
        ) from None
    method = normalise_method(request)
    problems = validate_hyperparameters(method, context_length=base.context_length)
    if problems:
        param, message = problems[0]
        raise JobRequestError(param, message)
    if method["type"] == "reinforcement":  # a score_model / label_model judge must exist for this organization
        from openft.training.rft_request import check_judge_models

        check_judge_models(session, organization_id, method["reinforcement"]["grader"])
    _check_file(session, organization_id, request.training_file, "training_file", method["type"])
    if request.validation_file is not None:
        _check_file(session, organization_id, request.validation_file, "validation_file", method["type"])
    if request.suffix is not None and not (isinstance(request.suffix, str) and SUFFIX_PATTERN.match(request.suffix)):
        raise JobRequestError(
            "suffix", "`suffix` must be 1-64 characters of letters, digits, '-', '_' or '.' (no ':')."
        )
    seed = request.seed
    if seed is None:
        seed = secrets.randbelow(MAX_SEED)
    elif isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise JobRequestError("seed", f"`seed` must be an integer between 0 and {MAX_SEED}.")
    _check_metadata(request.metadata)
    _check_integrations(request.integrations)
    check_active_jobs(session, organization_id)  # QuotaExceeded: answered 429 naming OPENFT_MAX_ACTIVE_JOBS

    job = FineTuningJob(
        id=new_id("ftjob-"),
        seq=new_seq(),
        organization_id=organization_id,
        model=base.name,
        training_file=request.training_file,
        validation_file=request.validation_file,
        status="validating_files",
        method=method,
        suffix=request.suffix,
        seed=seed,
        job_metadata=request.metadata,
        integrations=request.integrations,
        result_files=[],
        created_at=int(time.time()),
        attempts=0,
    )
    session.add(job)
    session.flush()
    job_store.add_event(session, job.id, f"Created fine-tuning job: {job.id}")
    job_store.add_event(session, job.id, f"Validating training file: {job.training_file}")
    queue.enqueue(session, VALIDATE, job.id, organization_id)
    return job

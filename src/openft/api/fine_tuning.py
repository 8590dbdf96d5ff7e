"""Fine-tuning jobs API (OpenAI's /v1/fine_tuning/jobs), on the database queue."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request

from openft.api.auth import current_org
from openft.api.errors import OpenAIError, bad_request, not_found
from openft.api.schemas import ListEnvelope
from openft.jobs import queue
from openft.store import jobs as job_store
from openft.store.db import session_scope
from openft.store.pagination import UnknownCursor
from openft.store.tables import FineTuningJob, JobCheckpoint, JobEvent, Organization
from openft.training.job_requests import JobRequest, JobRequestError, create_job
from openft.training.queue_kinds import TRAIN

router = APIRouter(prefix="/v1/fine_tuning/jobs", tags=["fine-tuning"])
Org = Annotated[Organization, Depends(current_org)]
OPENAI_HYPERPARAMETERS = ("batch_size", "learning_rate_multiplier", "n_epochs")
RFT_HYPERPARAMETERS = ("compute_multiplier", "eval_interval", "eval_samples")
REQUEST_FIELDS = {"model", "training_file", "validation_file", "suffix", "seed", "metadata", "integrations",
                  "hyperparameters", "method"}


def job_to_wire(job: FineTuningJob) -> dict[str, Any]:
    method_type = job.method["type"]
    given = dict(job.method.get(method_type, {}).get("hyperparameters", {}))
    shown = {**given, **(job.resolved_hyperparameters or {})}
    if not job.resolved_hyperparameters:
        extra = {"dpo": ("beta",), "reinforcement": RFT_HYPERPARAMETERS}.get(method_type, ())
        for name in OPENAI_HYPERPARAMETERS + extra:
            shown.setdefault(name, "auto")
    return {
        "id": job.id,
        "object": "fine_tuning.job",
        "created_at": job.created_at,
        "error": job.error,
        "fine_tuned_model": job.fine_tuned_model,
        "finished_at": job.finished_at,
        "hyperparameters": {name: shown.get(name, "auto") for name in OPENAI_HYPERPARAMETERS},
        "model": job.model,
        "organization_id": job.organization_id,
        "result_files": list(job.result_files or []),
        "seed": job.seed,
        "status": job.status,
        "trained_tokens": job.trained_tokens,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "estimated_finish": job.estimated_finish if job.status == "running" else None,
        "integrations": job.integrations,
        "metadata": job.job_metadata,
        # the method as given (a reinforcement job's grader included), with the hyperparameters as resolved
        "method": {"type": method_type, method_type: {**job.method.get(method_type, {}), "hyperparameters": shown}},
        "user_provided_suffix": job.suffix,
    }


def event_to_wire(event: JobEvent) -> dict[str, Any]:
    return {
        "id": event.id,
        "object": "fine_tuning.job.event",
        "created_at": event.created_at,
        "level": event.level,
        "message": event.message,
        # OpenAI's schema: `type` is message|metrics and `data` an object (its examples show {} for messages).
        "type": event.type or "message",
        "data": event.data if event.data is not None else {},
    }


def checkpoint_to_wire(checkpoint: JobCheckpoint) -> dict[str, Any]:
    return {
        "id": checkpoint.id,
        "object": "fine_tuning.job.checkpoint",
        "created_at": checkpoint.created_at,
        "fine_tuned_model_checkpoint": checkpoint.fine_tuned_model_checkpoint,
        "fine_tuning_job_id": checkpoint.job_id,
        "step_number": checkpoint.step_number,
        "metrics": checkpoint.metrics,
    }


def _envelope(items: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return ListEnvelope(data=items, first_id=items[0]["id"] if items else None,
                        last_id=items[-1]["id"] if items else None, has_more=has_more).model_dump()


def _job_not_found(job_id: str) -> OpenAIError:
    return not_found(f"Could not find fine-tuning job {job_id}.", param="fine_tuning_job_id")


def _owned_job(session, org: Organization, job_id: str) -> FineTuningJob:
    job = job_store.get_job(session, org.id, job_id)
    if job is None:
        raise _job_not_found(job_id)
    return job


@router.post("")
def create(org: Org, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    extra = {k: v for k, v in body.items() if k not in REQUEST_FIELDS}
    for required in ("model", "training_file"):
        if body.get(required) in (None, ""):
            raise bad_request(f"Missing required parameter: '{required}'.", param=required)
    request = JobRequest(**{k: v for k, v in body.items() if k in REQUEST_FIELDS}, extra=extra)
    with session_scope() as session:
        try:
            job = create_job(session, org.id, request)
        except JobRequestError as error:
            raise bad_request(error.message, param=error.param, code=error.code) from None
        return job_to_wire(job)


@router.get("")
def list_(
    request: Request,
    org: Org,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> dict[str, Any]:
    metadata = {key[len("metadata["):-1]: value for key, value in request.query_params.items()
                if key.startswith("metadata[") and key.endswith("]")}
    with session_scope() as session:
        try:
            page = job_store.list_jobs(session, org.id, after=after, limit=limit, metadata=metadata)
        except UnknownCursor:
            raise bad_request(f"No fine-tuning job with id '{after}' to list after.", param="after") from None
        return {"object": "list", "data": [job_to_wire(j) for j in page.rows], "has_more": page.has_more}


@router.get("/{job_id}")
def retrieve(job_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        job = _owned_job(session, org, job_id)
        return job_to_wire(job)


@router.post("/{job_id}/cancel")
def cancel(job_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        job = _owned_job(session, org, job_id)
        if job.status in job_store.FINAL_STATUSES:
            raise bad_request(f"Job {job_id} has already {job.status}; only active jobs can be cancelled.",
                              param="fine_tuning_job_id")
        # The worker sees the status and stops the training process; a trainer that finishes in the
        # meantime cannot overwrite it (its final update requires status 'running'). The task row is
        # locked before the job's row, as a runner's fenced writes do (queue.withdraw).
        queue.withdraw(session, job.id)  # a worker running it kills the process at once
        job.status, job.control, job.finished_at, job.estimated_finish = "cancelled", "cancel", int(time.time()), None
        job_store.add_event(session, job.id, "Fine-tuning job cancelled")
        return job_to_wire(job)


@router.post("/{job_id}/pause")
def pause(job_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        job = _owned_job(session, org, job_id)
        # A pause is honoured whenever it is acknowledged: the runner checks `control` before training,
        # at every step, and before publishing the model; a queued job leaves the queue at once.
        if job.status in ("running", "validating_files"):
            if job.control != "pause":
                job.control = "pause"
                job_store.add_event(session, job.id, "Pausing fine-tuning job: saving a checkpoint"
                                    if job.status == "running" else
                                    "Pausing fine-tuning job: it pauses once its files are validated")
        elif job.status == "queued":
            queue.withdraw(session, job.id)  # also when a worker has just claimed it: that child stops
            job.status, job.control, job.worker_id = "paused", None, None
            job_store.add_event(session, job.id, "Fine-tuning job paused before it started")
        else:
            raise bad_request(f"Job {job_id} is {job.status}; only running or queued jobs can be paused.",
                              param="fine_tuning_job_id")
        return job_to_wire(job)


@router.post("/{job_id}/resume")
def resume(job_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        job = _owned_job(session, org, job_id)
        if job.status != "paused":
            raise bad_request(f"Job {job_id} is {job.status}; only paused jobs can be resumed.",
                              param="fine_tuning_job_id")
        job.status, job.control, job.worker_id = "queued", None, None
        queue.enqueue(session, TRAIN, job.id, job.organization_id)
        job_store.add_event(session, job.id, "Fine-tuning job resumed; it continues from its last checkpoint")
        return job_to_wire(job)


def _job_page(org: Organization, job_id: str, list_rows, to_wire, what: str, after: str | None, limit: int):
    """A page of a job's events or checkpoints, newest first; the job must belong to the caller."""
    with session_scope() as session:
        _owned_job(session, org, job_id)
        try:
            page = list_rows(session, job_id, after=after, limit=limit)
        except UnknownCursor:
            raise bad_request(f"No {what} with id '{after}' to list after.", param="after") from None
        return _envelope([to_wire(row) for row in page.rows], page.has_more)


@router.get("/{job_id}/events")
def events(
    job_id: str, org: Org, after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20
) -> dict[str, Any]:
    return _job_page(org, job_id, job_store.list_events, event_to_wire, "event", after, limit)


@router.get("/{job_id}/checkpoints")
def checkpoints(
    job_id: str, org: Org, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 10
) -> dict[str, Any]:
    return _job_page(org, job_id, job_store.list_checkpoints, checkpoint_to_wire, "checkpoint", after, limit)

"""The `validating_files` step: re-check a job's files against the chosen base model before queueing.

Uploads are validated against the server's validation model; a job may pick another base model with a
different tokenizer or a shorter context, so the numbers are recomputed when they differ.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import update

from openft.config import get_settings
from openft.pricing.estimates import training_cost_estimates
from openft.store import files as file_store
from openft.store import jobs as job_store
from openft.store.blobs import BlobStore
from openft.store.db import session_scope
from openft.store.tables import FineTuningJob
from openft.training.batch_advice import batch_size_advice
from openft.training.hyperparameters import resolve_hyperparameters
from openft.training.job_requests import only_too_few_examples

HOSTED_COMPARISON = ("gpt-4o-mini", "gpt-4.1-nano", "gpt-3.5-turbo")

log = logging.getLogger(__name__)


def usd(amount: float) -> str:
    """Cents for real amounts; small ones keep their significant digits instead of showing $0.00."""
    return f"${amount:.2f}" if amount >= 0.1 else f"${amount:.2g}"


def _report_for(organization_id: str, file_id: str, base_model: str) -> dict[str, Any] | None:
    with session_scope() as session:
        row = file_store.get_file(session, organization_id, file_id)
        if row is None:
            return None
        stored = row.validation or {}
        path = BlobStore(get_settings().files_dir).path(row.storage_key)
    if stored.get("base_model") == base_model:
        return stored
    from openft.data.validation_service import validate_training_file

    return validate_training_file(path, base_model).report


def _finish(job_id: str, worker_id: str, values: dict[str, Any], events: list[tuple[str, str]]) -> None:
    with session_scope() as session:
        result = session.execute(
            update(FineTuningJob)
            .where(
                FineTuningJob.id == job_id,
                FineTuningJob.status == "validating_files",
                FineTuningJob.worker_id == worker_id,
            )
            .values(worker_id=None, **values)
        )
        if result.rowcount == 1:
            for level, message in events:
                job_store.add_event(session, job_id, message, level=level)


def _fail(job_id: str, worker_id: str, param: str, message: str) -> None:
    _finish(
        job_id,
        worker_id,
        {
            "status": "failed",
            "finished_at": int(time.time()),
            "error": {"code": "invalid_" + param, "message": message, "param": param},
        },
        [("error", message)],
    )


def validate_job(job_id: str, worker_id: str) -> None:
    with session_scope() as session:
        job = job_store.get_job(session, None, job_id)
        if job is None:
            return
        organization_id, model, method = job.organization_id, job.model, job.method
        files = [("training_file", job.training_file)]
        if job.validation_file:
            files.append(("validation_file", job.validation_file))
    from openft.models.registry import get_base_model

    context_length = get_base_model(model).context_length
    events: list[tuple[str, str]] = []
    training_stats: dict[str, Any] = {}
    training_report: dict[str, Any] = {}
    for param, file_id in files:
        try:
            report = _report_for(organization_id, file_id, model)
        except Exception as error:  # a broken tokenizer or file must fail the job, not the worker
            log.exception("validation failed")
            _fail(job_id, worker_id, param, f"Could not validate {file_id} against {model}: {error}")
            return
        if report is None:
            _fail(job_id, worker_id, param, f"The {param} {file_id} was deleted.")
            return
        if not report.get("ok") and not (param == "validation_file" and only_too_few_examples(report)):
            errors = report.get("errors") or []
            first = errors[0] if errors else {}
            where = f" (line {first.get('line')}: {first.get('message')})" if first else ""
            _fail(
                job_id,
                worker_id,
                param,
                f"{file_id} has {len(errors)} problem(s) for base model {model}{where}. "
                f"See GET /v1/files/{file_id}/validation.",
            )
            return
        from openft.training.moderation_gate import moderation_outcome

        moderated = moderation_outcome(organization_id, file_id, report)  # the organization's policy
        if moderated is not None and moderated[0] == "error":
            _fail(job_id, worker_id, param, moderated[1])
            return
        if moderated is not None:
            events.append(moderated)
        stats = report.get("stats") or {}
        over = stats.get("n_over_context") or 0
        if over:
            events.append(
                (
                    "warn",
                    f"{over} example(s) in {file_id} exceed the {context_length}-token context of "
                    f"{model} and will be truncated",
                )
            )
        if param == "training_file":
            training_stats, training_report = stats, report

    method_type = method["type"]
    given = method.get(method_type, {}).get("hyperparameters", {})
    n_examples = int(training_stats.get("n_valid") or 1)
    resolved = resolve_hyperparameters(method_type, given, n_train_examples=n_examples, context_length=context_length)
    billable = training_stats.get("billable_tokens_per_epoch")
    if billable is not None:
        events.append(
            (
                "info",
                f"{n_examples} examples x {resolved.n_epochs} epochs: about "
                f"{billable * resolved.n_epochs:,} billable training tokens",
            )
        )
    if advice := batch_size_advice(method_type, given, resolved, n_examples):
        events.append(("info", advice))
    hosted = {e["model"]: e for e in training_cost_estimates(training_report, resolved.n_epochs)}
    if hosted:
        shown = ", ".join(f"{m} {usd(hosted[m]['cost_usd'])}" for m in HOSTED_COMPARISON if m in hosted)
        events.append(("info", f"The same training on OpenAI would cost about: {shown}"))
    events.append(("info", "Files validated, moving job to queued state"))
    _finish(job_id, worker_id, {"status": "queued"}, events)

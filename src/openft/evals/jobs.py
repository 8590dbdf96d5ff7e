"""Evaluation runs as durable queue work (kind `evaluation`): created by the API/CLI, leased by any worker,
run in the worker's child process against serving engines loaded there, results stored in the database.

An evaluation that runs out of memory takes down only its child, never the API server or the worker.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session, object_session

from openft.config import get_settings
from openft.evals.chat import LocalChat, OpenAIChat
from openft.evals.examples import load_examples
from openft.evals.forgetting import DEFAULT_ITEMS, ForgettingSettings
from openft.evals.queue_kind import EVALUATION
from openft.evals.requests import CheckedRequest, reveal_api_keys
from openft.evals.runner import EvalCancelled, EvalSettings, JudgeSettings, run_evaluation
from openft.jobs import queue
from openft.jobs.lease import Lease, LeaseLost
from openft.store import jobs as job_store
from openft.store.blobs import BlobStore
from openft.store.db import session_scope
from openft.store.eval_tables import EvalRun
from openft.store.files import get_file
from openft.store.ids import new_id
from openft.store.pagination import Page, new_seq, paginate
from openft.store.tables import FineTuningJob

log = logging.getLogger(__name__)
FINAL_STATUSES = ("succeeded", "failed", "cancelled")
PROGRESS_EVERY_S = 1.0


def create_run(session: Session, organization_id: str, checked: CheckedRequest) -> EvalRun:
    run = EvalRun(
        id=new_id("eval-"),
        seq=new_seq(),
        organization_id=organization_id,
        status="queued",
        config=checked.config,
        eval_metadata=checked.metadata,
        progress={"completed": 0, "total": None},
        created_at=int(time.time()),
    )
    session.add(run)
    session.flush()
    queue.enqueue(session, EVALUATION, run.id, organization_id)
    return run


def get_run(session: Session, organization_id: str | None, run_id: str) -> EvalRun | None:
    run = session.get(EvalRun, run_id)
    if run is None or (organization_id is not None and run.organization_id != organization_id):
        return None
    return run


def list_runs(session: Session, organization_id: str, *, after: str | None, limit: int) -> Page:
    stmt = select(EvalRun).where(EvalRun.organization_id == organization_id)
    return paginate(session, stmt, EvalRun, after=after, limit=limit, order="desc")


def cancel_run(run: EvalRun) -> None:
    """Cancel a queued or running evaluation; a worker running it stops its child at once."""
    run.status, run.finished_at = "cancelled", int(time.time())
    queue.withdraw(object_session(run), run.id)


def _finish(lease: Lease, **values: Any) -> None:
    with lease.session() as session:
        session.execute(
            update(EvalRun)
            .where(EvalRun.id == lease.subject_id, EvalRun.status == "running")
            .values(finished_at=int(time.time()), worker_id=None, **values)
        )
        lease.finish(session)


def run_crashed(lease: Lease, session: Session, exit_code: int) -> None:
    """The worker's record of an evaluation process that died (out of memory, a segfault)."""
    message = f"The evaluation process exited unexpectedly (exit code {exit_code}); see the worker's log."
    session.execute(
        update(EvalRun)
        .where(EvalRun.id == lease.subject_id, EvalRun.status == "running")
        .values(status="failed", finished_at=int(time.time()), worker_id=None,
                error={"code": "eval_process_died", "message": message, "param": None})
    )


def _file_path(organization_id: str, file_id: str):
    with session_scope() as session:
        row = get_file(session, organization_id, file_id)
        if row is None:
            raise FileNotFoundError(f"file {file_id} was deleted before the evaluation ran")
        return BlobStore(get_settings().files_dir).path(row.storage_key)


def _passages(organization_id: str, file_ids: list[str]):
    """The RAG passages of the run's knowledge documents (evals.documents); none without documents."""
    if not file_ids:
        return []
    from openft.evals.documents import document_chunks

    with session_scope() as session:
        return document_chunks(session, organization_id, file_ids)


def settings_from_config(config: dict[str, Any]) -> EvalSettings:
    judge = config.get("judge")
    return EvalSettings(
        base_model=config["model"],
        strategies=config["strategies"],
        fine_tuned_models=config.get("fine_tuned_models") or [],
        k=config.get("k", 3),
        metrics=config.get("metrics"),
        labels=config.get("labels"),
        max_tokens=config.get("max_tokens", 256),
        seed=config.get("seed", 0),
        external_model=(config.get("external") or {}).get("model"),
        rag_k=config.get("rag_k") or 3,
        tool_choice=config.get("tool_choice") or "auto",
        rival_models=config.get("rival_models") or [],
        forgetting=ForgettingSettings(
            enabled=config.get("forgetting_check", True), n_items=config.get("forgetting_items") or DEFAULT_ITEMS
        ),
        judge=None
        if not judge
        else JudgeSettings(
            model=judge["model"],
            mode=judge.get("mode", "graded"),
            criteria=judge.get("criteria"),
            baseline=judge.get("baseline", "zero-shot"),
            seed=config.get("seed", 0),
        ),
    )


def training_record(organization_id: str, fine_tuned_models: list[str]) -> dict[str, Any] | None:
    """Measured cost drivers of the fine-tuning job behind the first fine-tuned model: trained tokens, seconds."""
    with session_scope() as session:
        for name in fine_tuned_models:
            model = job_store.get_fine_tuned_model(session, organization_id, name)
            job_id = model.job_id if model is not None else None
            if job_id is None:
                checkpoint = job_store.get_checkpoint_by_model(session, organization_id, name)
                job_id = checkpoint.job_id if checkpoint is not None else None
            job = session.get(FineTuningJob, job_id) if job_id else None
            if job is not None and job.trained_tokens:
                seconds = (job.finished_at - job.started_at) if job.started_at and job.finished_at else 0
                record = {"job_id": job.id, "trained_tokens": job.trained_tokens, "seconds": float(seconds)}
                # A training file that came out of a distillation also cost the teacher's tokens (one time).
                from openft.evals.distill.objects import teacher_cost_of_file

                teacher = teacher_cost_of_file(session, organization_id, job.training_file)
                if teacher is not None:
                    record["distillation_id"], record["teacher_cost_usd"] = teacher
                return record
    return None


class _Progress:
    """Writes progress and a heartbeat at most once a second, and reads whether the run was cancelled."""

    def __init__(self, lease: Lease) -> None:
        self.lease, self.run_id, self.last, self.cancelled = lease, lease.subject_id, 0.0, False

    def update(self, completed: int, total: int) -> None:
        now = time.monotonic()
        if now - self.last < PROGRESS_EVERY_S and completed < total:
            return
        self.last = now
        with self.lease.session() as session:
            session.execute(
                update(EvalRun)
                .where(EvalRun.id == self.run_id)
                .values(progress={"completed": completed, "total": total}, heartbeat_at=time.time())
            )
            self.cancelled = session.scalar(select(EvalRun.status).where(EvalRun.id == self.run_id)) != "running"

    def should_stop(self) -> bool:
        return self.cancelled


def execute_run(lease: Lease) -> int:
    """The `evaluation` runner (in the queue's child process)."""
    with lease.session() as session:
        run = session.get(EvalRun, lease.subject_id)
        if run is None or run.status not in ("queued", "running"):
            lease.finish(session)
            return 0
        # A run taken over from a worker that stopped responding starts again from the beginning.
        run.status, run.worker_id = "running", lease.holder
        run.started_at, run.progress = int(time.time()), {"completed": 0, "total": None}
        organization_id, config = run.organization_id, dict(run.config)
    # Imported here: the serving engine pulls in torch, which creating or listing runs never needs.
    from openft.evals.forgetting import LocalGeneralScorer
    from openft.evals.local_models import LocalModels
    from openft.serving.backend import LocalBackend

    models = LocalModels(organization_id)

    chat = LocalChat(LocalBackend(models.route), max_tokens=config.get("max_tokens", 256))
    progress = _Progress(lease)
    try:
        config = reveal_api_keys(config)  # stored encrypted (or named as a server variable); see evals/requests.py
        examples = load_examples(_file_path(organization_id, config["eval_file"]), config.get("max_examples"))
        train = load_examples(_file_path(organization_id, config["training_file"])) if config["training_file"] else []
        external = config.get("external")
        external_chat = OpenAIChat(external["base_url"], external["api_key"]) if external else None
        passages = _passages(organization_id, config.get("documents") or [])
        results = run_evaluation(
            settings_from_config(config),
            examples,
            train,
            chat,
            external_chat=external_chat,
            judge_chat=_judge_chat(config.get("judge"), chat),
            on_progress=progress.update,
            should_stop=progress.should_stop,
            passages=passages,
            # Scored after the strategies; the serving engines are closed first so no weights are held twice.
            general_scorer=LocalGeneralScorer(organization_id, before_loading=models.close),
        )
        results["training"] = training_record(organization_id, config.get("fine_tuned_models") or [])
        _finish(lease, status="succeeded", results=results)
    except EvalCancelled:
        log.info("evaluation %s cancelled", lease.subject_id)
    except LeaseLost:
        raise
    except Exception as exc:
        log.exception("evaluation %s failed", lease.subject_id)
        _finish(lease, status="failed", error={"code": "eval_failed", "message": str(exc), "param": None})
    finally:
        chat.close()
        models.close()
    return 0


def _judge_chat(judge: dict[str, Any] | None, local_chat: LocalChat):
    """The judge as `chat(messages) -> text`: an OpenAI-compatible endpoint when given, else a local model."""
    if not judge:
        return None
    if judge.get("base_url"):
        endpoint = OpenAIChat(judge["base_url"], judge.get("api_key") or "none", max_tokens=512)
        return lambda messages: endpoint(judge["model"], messages).text
    return lambda messages: local_chat(judge["model"], messages, max_tokens=512).text

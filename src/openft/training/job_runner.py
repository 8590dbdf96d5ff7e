"""The `fine_tuning.train` runner: trains one leased job and records everything in the database.

It runs in the queue's child process (openft.jobs.child), so cancel can kill it, a crash cannot take the
server down, and memory is returned. Every write goes through the lease's fenced session: once another
worker has taken the job over, nothing from this process lands any more.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from openft.config import get_settings
from openft.jobs.lease import Lease, LeaseLost
from openft.models.names import checkpoint_model_name, fine_tuned_model_name
from openft.models.registry import get_base_model
from openft.store import files as file_store
from openft.store import jobs as job_store
from openft.store.blobs import BlobStore
from openft.store.db import session_scope
from openft.store.ids import new_id
from openft.store.pagination import new_seq
from openft.store.tables import FineTunedModel, FineTuningJob, JobCheckpoint, Organization
from openft.training.callbacks import StopRequest
from openft.training.datasets import TrainingDataError
from openft.training.hyperparameters import resolve_hyperparameters
from openft.training.trainer_config import TrainerRunConfig

log = logging.getLogger(__name__)
RESULT_COLUMNS = ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
CONTROL_POLL_SECONDS = 0.5


def metrics_message(step: int, total: int, metrics: dict[str, float]) -> str:
    if "train_reward_mean" in metrics:  # reinforcement fine-tuning reports rewards (training/rft_metrics.py)
        from openft.training.rft_metrics import reward_message

        return reward_message(step, total, metrics)
    parts = [f"training loss={metrics['train_loss']:.4f}"] if "train_loss" in metrics else []
    if "valid_loss" in metrics:
        parts.append(f"validation loss={metrics['valid_loss']:.4f}")
    if "train_mean_token_accuracy" in metrics:
        parts.append(f"training accuracy={metrics['train_mean_token_accuracy']:.3f}")
    return f"Step {step}/{total}: " + ", ".join(parts)


class DatabaseReporter:
    """The trainer's Reporter: events, checkpoints, progress and stop requests all go through the database."""

    def __init__(self, lease: Lease, ft_model_name: str) -> None:
        self.lease = lease
        self.job_id = lease.subject_id
        self.ft_model_name = ft_model_name
        self.started = time.monotonic()
        self.first_step: int | None = None
        self._last_poll = 0.0
        self._last_answer: StopRequest | None = None

    def on_start(self, total_steps: int, resolved_hparams: dict[str, Any]) -> None:
        with self.lease.session() as session:
            session.execute(
                update(FineTuningJob).where(FineTuningJob.id == self.job_id).values(total_steps=total_steps)
            )

    def on_metrics(self, step: int, total_steps: int, metrics: dict[str, float]) -> None:
        if self.first_step is None:
            self.first_step, self.started = step - 1, time.monotonic()
        done = max(step - self.first_step, 1)
        per_step = (time.monotonic() - self.started) / done
        finish = int(time.time() + per_step * max(total_steps - step, 0))
        data = {"step": step, "total_steps": total_steps, **metrics}
        with self.lease.session() as session:
            job_store.add_event(
                session, self.job_id, metrics_message(step, total_steps, metrics), type="metrics", data=data
            )
            session.execute(
                update(FineTuningJob)
                .where(FineTuningJob.id == self.job_id)
                .values(current_step=step, total_steps=total_steps, estimated_finish=finish)
            )

    def on_checkpoint(self, step: int, path: str, metrics: dict[str, float]) -> None:
        full_metrics = {"step": float(step), **metrics}
        with self.lease.session() as session:
            existing = {str(p) for p in Path(path).parent.glob("checkpoint-*") if p.is_dir() and str(p) != path}
            job_store.forget_missing_checkpoints(session, self.job_id, existing)
            session.add(
                JobCheckpoint(
                    id=new_id("ftckpt_"),
                    seq=new_seq(),
                    job_id=self.job_id,
                    created_at=int(time.time()),
                    step_number=step,
                    fine_tuned_model_checkpoint=checkpoint_model_name(self.ft_model_name, step),
                    metrics=full_metrics,
                    path=path,
                )
            )
            job_store.add_event(session, self.job_id, f"Checkpoint created at step {step}")

    def should_stop(self) -> StopRequest | None:
        now = time.monotonic()
        if now - self._last_poll < CONTROL_POLL_SECONDS:
            return self._last_answer
        self._last_poll = now
        with session_scope() as session:
            job = session.get(FineTuningJob, self.job_id)
            if job is None or job.status == "cancelled" or job.control == "cancel":
                self._last_answer = "cancel"
            elif job.control == "pause":
                self._last_answer = "pause"
            else:
                self._last_answer = None
        return self._last_answer


def _blob_path(session, organization_id: str, file_id: str | None, param: str) -> str | None:
    if file_id is None:
        return None
    row = file_store.get_file(session, organization_id, file_id)
    if row is None:
        raise TrainingDataError("file_missing", f"The {param} {file_id} was deleted before training started.", param)
    return str(BlobStore(get_settings().files_dir).path(row.storage_key))


def _report_to(job: FineTuningJob) -> tuple[list[str], str | None]:
    wants_wandb = any(item.get("type") == "wandb" for item in job.integrations or [])
    if not wants_wandb:
        return ["tensorboard"], None
    import importlib.util

    if importlib.util.find_spec("wandb") is None:
        return (
            ["tensorboard"],
            "The wandb integration was requested but the `wandb` package is not installed; "
            "metrics are kept as TensorBoard files among the job's artifacts.",
        )
    project = next(item["wandb"]["project"] for item in job.integrations if item.get("type") == "wandb")
    os.environ.setdefault("WANDB_PROJECT", project)
    return ["tensorboard", "wandb"], None


def _set_status(session: Session, lease: Lease, status: str, **values: Any) -> bool:
    """Move a running job to its final state (unless the user already cancelled it) and finish its task.

    Called inside the lease's fenced session, so a runner that lost its lease changes nothing."""
    result = session.execute(
        update(FineTuningJob)
        .where(FineTuningJob.id == lease.subject_id, FineTuningJob.status == "running")
        .values(status=status, **values)
    )
    lease.finish(session)
    return result.rowcount == 1


def fail_job(lease: Lease, code: str, message: str, param: str | None = None) -> None:
    with lease.session() as session:
        if _set_status(
            session,
            lease,
            "failed",
            error={"code": code, "message": message, "param": param},
            finished_at=int(time.time()),
            worker_id=None,
            control=None,
            estimated_finish=None,
        ):
            job_store.add_event(session, lease.subject_id, f"Fine-tuning job failed: {message}", level="error")


def on_crash(lease: Lease, session: Session, exit_code: int) -> None:
    """The worker's record of a training process that died without finishing (out of memory, a segfault)."""
    if _set_status(
        session,
        lease,
        "failed",
        finished_at=int(time.time()),
        worker_id=None,
        estimated_finish=None,
        error={
            "code": "training_process_died",
            "message": f"The training process exited unexpectedly (exit code {exit_code}). "
            "See the server log for details.",
            "param": None,
        },
    ):
        job_store.add_event(session, lease.subject_id, f"Training process exited with code {exit_code}", level="error")


def results_csv(history: list[dict[str, float]]) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(RESULT_COLUMNS)
    for row in history:
        writer.writerow(
            [
                int(row.get("step", 0)),
                *(
                    ("" if row.get(key) is None else f"{row[key]:.6f}")
                    for key in ("train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")
                ),
            ]
        )
    return out.getvalue().encode()


def _store_results_file(lease: Lease, organization_id: str, history: list[dict[str, float]]) -> str:
    blobs = BlobStore(get_settings().files_dir)
    blobs.root.mkdir(parents=True, exist_ok=True)
    key = new_id("blob_", 32)
    payload = results_csv(history)
    blobs.write_bytes(key, payload, "store the job's metrics file")  # atomic; StorageFault says what failed
    with lease.session() as session:
        row = file_store.add_file(
            session,
            file_id=new_id("file-"),
            organization_id=organization_id,
            filename="step_metrics.csv",
            purpose="fine-tune-results",
            size=len(payload),
            storage_key=key,
            status="processed",
        )
        return row.id


def _paused_before_training(session: Session, lease: Lease, job: FineTuningJob) -> None:
    job.status, job.control, job.worker_id, job.estimated_finish = "paused", None, None, None
    lease.finish(session)
    job_store.add_event(session, job.id, "Fine-tuning job paused before training started; resume it to start")


def _takeover_event(session: Session, lease: Lease, checkpoint: JobCheckpoint | None) -> None:
    where = f"checkpoint at step {checkpoint.step_number}" if checkpoint else "the beginning"
    job_store.add_event(
        session,
        lease.subject_id,
        f"Worker {lease.previous_owner} stopped responding; the job was re-queued and resumes from {where}",
        level="warn",
    )


def run_job(lease: Lease) -> int:
    settings = get_settings()
    job_id = lease.subject_id
    with lease.session() as session:
        job = job_store.get_job(session, None, job_id)
        if job is None or job.status not in ("queued", "running"):
            lease.finish(session)  # cancelled or paused while it waited
            return 0
        if job.control == "pause":  # a pause requested while the job was being claimed is honoured here
            _paused_before_training(session, lease, job)
            return 0
        job.status, job.worker_id = "running", lease.holder
        org = session.get(Organization, job.organization_id)
        base = get_base_model(job.model)
        ft_name = fine_tuned_model_name(base.name, org.name, job.suffix or "", job.id)
        checkpoint = job_store.latest_checkpoint(session, job.id)
        if lease.previous_owner:
            _takeover_event(session, lease, checkpoint)
        try:
            training_path = _blob_path(session, job.organization_id, job.training_file, "training_file")
            validation_path = _blob_path(session, job.organization_id, job.validation_file, "validation_file")
        except TrainingDataError as error:
            missing = error
        else:
            missing = None
        training_row = file_store.get_file(session, job.organization_id, job.training_file)
        n_examples = int((((training_row.validation if training_row else None) or {}).get("stats") or {})
                         .get("n_valid") or 0)
        method_type = job.method["type"]
        given = job.method.get(method_type, {}).get("hyperparameters", {})
        hyperparameters = resolve_hyperparameters(
            method_type, given, n_train_examples=max(n_examples, 1), context_length=base.context_length
        )
        output_dir = Path(job.output_dir or settings.artifacts_dir / job.id)
        resume_from = checkpoint.path if checkpoint is not None and Path(checkpoint.path).is_dir() else None
        report_to, integration_warning = _report_to(job)
        first_attempt = job.started_at is None
        job.attempts = (job.attempts or 0) + 1
        job.output_dir = str(output_dir)
        job.resolved_hyperparameters = hyperparameters.to_job_dict()
        job.started_at = job.started_at or int(time.time())
        # job.control is left as it is: a pause sent while the job starts is seen at the first step.
        if missing is None:
            if resume_from:
                step = checkpoint.step_number
                job_store.add_event(session, job.id, f"Resuming fine-tuning from checkpoint at step {step}")
            elif first_attempt:
                job_store.add_event(session, job.id, "Fine-tuning job started")
            else:
                job_store.add_event(session, job.id, "Restarting fine-tuning from the beginning (no checkpoint yet)")
            if integration_warning:
                job_store.add_event(session, job.id, integration_warning, level="warn")
        organization_id, seed = job.organization_id, job.seed
    if missing is not None:
        fail_job(lease, missing.code, str(missing), missing.param)
        return 1

    config = TrainerRunConfig(
        base_model=base.name,
        training_file=training_path,
        validation_file=validation_path,
        output_dir=str(output_dir),
        hyperparameters=hyperparameters,
        method_type=method_type,
        seed=seed,
        resume_from_checkpoint=resume_from,
        report_to=report_to,
    )
    from openft.training.distributed import run_training_launched  # heavy import, after the cheap checks

    reporter = DatabaseReporter(lease, ft_name)
    try:
        if method_type == "reinforcement":  # GRPO with the job's grader, in this process (training/rft_runner.py)
            from openft.training.rft_runner import train_reinforcement

            result = train_reinforcement(lease, ft_name, config)
        else:
            result = run_training_launched(config, reporter)
    except TrainingDataError as error:
        fail_job(lease, error.code, str(error), getattr(error, "param", None))
        return 1
    except LeaseLost:
        raise
    except Exception as error:  # the job fails with the reason; the worker and server keep running
        log.exception("training failed")
        fail_job(lease, "training_error", f"{type(error).__name__}: {error}")
        return 1

    if result.status == "paused":
        _record_pause(lease, result.steps)
        return 0
    if result.status == "cancelled":
        return 0

    results_file = _store_results_file(lease, organization_id, result.metrics_history)
    with lease.session() as session:
        job = session.get(FineTuningJob, job_id)
        # A pause that arrived after the last step was checked is honoured here, not dropped: resuming
        # continues from the final checkpoint and publishes the model.
        pause_pending = job.status == "running" and job.control == "pause"
        if job.status != "running":
            lease.finish(session)  # cancelled meanwhile: no model is published
        elif not pause_pending:
            session.merge(
                FineTunedModel(
                    id=ft_name,
                    organization_id=organization_id,
                    base_model=base.name,
                    job_id=job_id,
                    created_at=int(time.time()),
                    path=result.final_path,
                    kind="full" if hyperparameters.lora_rank == 0 else "lora",
                )
            )
            _set_status(
                session,
                lease,
                "succeeded",
                fine_tuned_model=ft_name,
                trained_tokens=result.trained_tokens,
                finished_at=int(time.time()),
                result_files=[results_file],
                worker_id=None,
                estimated_finish=None,
                control=None,
            )
            for warning in result.warnings:
                job_store.add_event(session, job_id, warning, level="warn")
            job_store.add_event(session, job_id, f"New fine-tuned model created: {ft_name}")
            job_store.add_event(session, job_id, "The job has successfully completed")
    if pause_pending:
        _record_pause(lease, result.steps)
    return 0


def _record_pause(lease: Lease, steps: int) -> None:
    with lease.session() as session:
        if _set_status(session, lease, "paused", worker_id=None, control=None, estimated_finish=None):
            job_store.add_event(
                session,
                lease.subject_id,
                f"Fine-tuning job paused at step {steps}; resume it to continue from this checkpoint",
            )

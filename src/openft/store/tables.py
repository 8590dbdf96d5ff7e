"""SQLAlchemy tables. Changes here need a migration in store/migrations/versions."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class Organization(Base):
    __tablename__ = "organizations"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    created_at: Mapped[int] = mapped_column(BigInteger)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    # Only a SHA-256 of the key is stored; the prefix lets a person recognise a key in a list.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    name: Mapped[str | None] = mapped_column(String(128))
    created_at: Mapped[int] = mapped_column(BigInteger)
    revoked_at: Mapped[int | None] = mapped_column(BigInteger)


class File(Base):
    __tablename__ = "files"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    # Insertion time in ns: ties in created_at (same second) still paginate deterministically.
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    filename: Mapped[str] = mapped_column(String(512))
    purpose: Mapped[str] = mapped_column(String(64), index=True)
    bytes: Mapped[int] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str] = mapped_column(String(32))
    status_details: Mapped[str | None] = mapped_column(Text)
    # Blob key under files_dir: a generated id, never the user's file name.
    storage_key: Mapped[str] = mapped_column(String(128))
    validation: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # Set when a delete starts: the file is gone for users, and the reaper finishes what a crash interrupted.
    deleted_at: Mapped[int | None] = mapped_column(BigInteger)  # migration 0005_hardening


class FineTuningJob(Base):
    __tablename__ = "fine_tuning_jobs"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    model: Mapped[str] = mapped_column(String(256))
    training_file: Mapped[str] = mapped_column(String(64))
    validation_file: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(32), index=True)
    # The method as requested ("auto" kept) and, once running, the resolved numbers.
    method: Mapped[dict[str, Any]] = mapped_column(JSON)
    resolved_hyperparameters: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    suffix: Mapped[str | None] = mapped_column(String(64))
    seed: Mapped[int] = mapped_column(BigInteger)
    job_metadata: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSON)
    integrations: Mapped[list[Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    fine_tuned_model: Mapped[str | None] = mapped_column(String(512))
    result_files: Mapped[list[Any]] = mapped_column(JSON)
    trained_tokens: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[int | None] = mapped_column(BigInteger)
    finished_at: Mapped[int | None] = mapped_column(BigInteger)
    estimated_finish: Mapped[int | None] = mapped_column(BigInteger)
    # Queue bookkeeping: which worker holds the job, when it last proved alive, and what the user asked.
    worker_id: Mapped[str | None] = mapped_column(String(128))
    heartbeat_at: Mapped[float | None] = mapped_column(Float)
    control: Mapped[str | None] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    output_dir: Mapped[str | None] = mapped_column(Text)
    current_step: Mapped[int | None] = mapped_column(Integer)
    total_steps: Mapped[int | None] = mapped_column(Integer)


class JobEvent(Base):
    __tablename__ = "fine_tuning_job_events"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    level: Mapped[str] = mapped_column(String(8))
    message: Mapped[str] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # The fencing token of the queue lease the event was written under (None: written by the API).
    lease_token: Mapped[int | None] = mapped_column(BigInteger)


class JobCheckpoint(Base):
    __tablename__ = "fine_tuning_checkpoints"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, index=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("fine_tuning_jobs.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    step_number: Mapped[int] = mapped_column(Integer)
    fine_tuned_model_checkpoint: Mapped[str] = mapped_column(String(512), index=True)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    path: Mapped[str] = mapped_column(Text)


class FineTunedModel(Base):
    __tablename__ = "fine_tuned_models"

    id: Mapped[str] = mapped_column(String(512), primary_key=True)  # the ft:... name
    organization_id: Mapped[str] = mapped_column(ForeignKey("organizations.id"), index=True)
    base_model: Mapped[str] = mapped_column(String(256))
    job_id: Mapped[str] = mapped_column(String(64), index=True)
    created_at: Mapped[int] = mapped_column(BigInteger)
    path: Mapped[str] = mapped_column(Text)
    kind: Mapped[str] = mapped_column(String(16))  # "lora" (PEFT adapter folder) | "full" (whole model folder)

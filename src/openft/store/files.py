"""File records. Every query is scoped to one organization: another org's file does not exist."""

from __future__ import annotations

import time
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from openft.store.pagination import Page, new_seq, paginate
from openft.store.tables import File


def add_file(
    session: Session,
    *,
    file_id: str,
    organization_id: str,
    filename: str,
    purpose: str,
    size: int,
    storage_key: str,
    status: str,
    status_details: str | None = None,
    validation: dict[str, Any] | None = None,
    expires_at: int | None = None,
    created_at: int | None = None,
) -> File:
    row = File(
        id=file_id,
        seq=new_seq(),
        organization_id=organization_id,
        filename=filename,
        purpose=purpose,
        bytes=size,
        created_at=created_at or int(time.time()),
        expires_at=expires_at,
        status=status,
        status_details=status_details,
        storage_key=storage_key,
        validation=validation,
    )
    session.add(row)
    session.flush()
    return row


def get_file(session: Session, organization_id: str, file_id: str) -> File | None:
    row = session.get(File, file_id)
    if row is None or row.organization_id != organization_id:
        return None
    if row.expires_at is not None and row.expires_at <= time.time():
        return None
    return row


def list_files(
    session: Session,
    organization_id: str,
    *,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"],
    purpose: str | None,
) -> Page:
    stmt = select(File).where(File.organization_id == organization_id)
    stmt = stmt.where((File.expires_at.is_(None)) | (File.expires_at > int(time.time())))
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    return paginate(session, stmt, File, after=after, limit=limit, order=order)


def delete_file(session: Session, row: File) -> None:
    session.delete(row)
    session.flush()

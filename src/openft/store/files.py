"""File records. Every query is scoped to one organization: another org's file does not exist.

A delete marks the record first (``deleted_at``: gone for users from that moment), then removes the
blob, then the record; a failure in between leaves a marked record that the reaper finishes, never
a visible record without its bytes.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from openft.store.blobs import BlobStore, StorageFault
from openft.store.db import session_scope
from openft.store.pagination import Page, new_seq, paginate
from openft.store.tables import File

log = logging.getLogger(__name__)


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
    if row is None or row.organization_id != organization_id or row.deleted_at is not None:
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
    stmt = select(File).where(File.organization_id == organization_id, File.deleted_at.is_(None))
    stmt = stmt.where((File.expires_at.is_(None)) | (File.expires_at > int(time.time())))
    if purpose:
        stmt = stmt.where(File.purpose == purpose)
    return paginate(session, stmt, File, after=after, limit=limit, order=order)


def mark_deleted(session: Session, file_id: str) -> None:
    """Step 1 of a delete: the file disappears for users; its bytes are removed next."""
    session.execute(update(File).where(File.id == file_id).values(deleted_at=int(time.time())))


def unmark_deleted(session: Session, file_id: str) -> None:
    """The bytes could not be removed: the file is back, whole, as it was."""
    session.execute(update(File).where(File.id == file_id).values(deleted_at=None))


def remove_record(session: Session, file_id: str) -> None:
    """Last step of a delete, once the bytes are gone (a no-op if another process finished it)."""
    session.execute(delete(File).where(File.id == file_id))


def delete_file_and_blob(file_id: str, storage_key: str, blobs: BlobStore) -> None:
    """Mark the record, remove the bytes, remove the record.

    A disk that refuses to remove the bytes raises StorageFault and the file is restored as it was;
    a crash or database error after the bytes are gone leaves only a marked record, which the reaper
    removes: never a visible record without its bytes, nor bytes without a record.
    """
    with session_scope() as session:
        mark_deleted(session, file_id)
    try:
        blobs.delete(storage_key)
    except StorageFault:
        try:
            with session_scope() as session:
                unmark_deleted(session, file_id)
        except SQLAlchemyError:
            log.exception("file %s stays marked deleted; the reaper will retry removing it", file_id)
        raise
    try:
        with session_scope() as session:
            remove_record(session, file_id)
    except SQLAlchemyError:
        # The user's delete is done (the file is hidden and its bytes are gone); the reaper drops the record.
        log.exception("record of deleted file %s left for the reaper", file_id)


# Files openft writes itself (training metrics); they do not count against an organization's storage quota.
SYSTEM_PURPOSES = ("fine-tune-results",)


def bytes_stored(session: Session, organization_id: str) -> int:
    """Bytes of the organization's uploaded files, as the user sees them (deleted and expired ones excluded)."""
    total = session.scalar(
        select(func.coalesce(func.sum(File.bytes), 0)).where(
            File.organization_id == organization_id,
            File.purpose.not_in(SYSTEM_PURPOSES),
            File.deleted_at.is_(None),
            (File.expires_at.is_(None)) | (File.expires_at > int(time.time())),
        )
    )
    return int(total or 0)

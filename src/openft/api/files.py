"""Files API (OpenAI's /v1/files) plus the openft validation report of fine-tune uploads."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from python_multipart.exceptions import FormParserError

from openft.api.auth import current_org
from openft.api.errors import bad_request, not_found
from openft.api.multipart import UploadTooLarge, parse_upload
from openft.api.schemas import FileDeleted, FileObject, ListEnvelope
from openft.config import get_settings
from openft.store import files as file_store
from openft.store.blobs import BlobStore, StorageFault, storage_errors
from openft.store.db import session_scope
from openft.store.ids import new_id
from openft.store.pagination import UnknownCursor
from openft.store.quotas import check_storage, storage_room
from openft.store.tables import File, Organization

router = APIRouter(prefix="/v1/files", tags=["files"])

PURPOSES = ("fine-tune", "batch", "evals", "user_data", "assistants", "vision")
MIN_EXPIRY_SECONDS = 3600
MAX_EXPIRY_SECONDS = 30 * 24 * 3600
MULTIPART_OVERHEAD = 64 * 1024  # boundaries and form fields around the file's bytes
DISCONNECT_POLL_S = 0.25  # how often an upload being validated checks that its client is still there
Org = Annotated[Organization, Depends(current_org)]


def _blobs() -> BlobStore:
    return BlobStore(get_settings().files_dir)


def to_wire(row: File) -> FileObject:
    return FileObject(
        id=row.id,
        bytes=row.bytes,
        created_at=row.created_at,
        filename=row.filename,
        purpose=row.purpose,
        status=row.status,
        status_details=row.status_details,
        expires_at=row.expires_at,
    )


def _file_not_found(file_id: str) -> Exception:
    return not_found(f"No such File object: {file_id}", param="id")


def _expiry(fields: dict[str, str], created_at: int) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor != "created_at":
        raise bad_request("expires_after[anchor] must be 'created_at'.", param="expires_after.anchor")
    try:
        value = int(seconds or "")
    except ValueError:
        raise bad_request(
            "expires_after[seconds] must be an integer.", param="expires_after.seconds"
        ) from None
    if not MIN_EXPIRY_SECONDS <= value <= MAX_EXPIRY_SECONDS:
        raise bad_request(
            f"expires_after[seconds] must be between {MIN_EXPIRY_SECONDS} and {MAX_EXPIRY_SECONDS}.",
            param="expires_after.seconds",
        )
    return created_at + value


@router.post("", response_model=FileObject)
async def create_file(request: Request, org: Org) -> FileObject:
    settings = get_settings()
    limit = settings.max_upload_bytes
    declared = request.headers.get("content-length")
    declared_bytes = int(declared) if declared and declared.isdigit() else None
    if declared_bytes is not None and declared_bytes > limit + MULTIPART_OVERHEAD:
        # Refuse before reading a byte of the body.
        raise _too_large(limit)
    with session_scope() as session:
        room = storage_room(session, org.id)
        if room is not None and declared_bytes is not None and declared_bytes > room + MULTIPART_OVERHEAD:
            check_storage(session, org.id, declared_bytes - MULTIPART_OVERHEAD)  # refused before reading the body
    blobs = _blobs()
    blobs.ensure_root()
    storage_key = new_id("blob_", 32)
    # The bytes go to a temporary name and take the blob's name only once the record is being written:
    # a killed upload leaves a partial file for the reaper, never a blob that looks complete.
    partial = blobs.partial_path(storage_key)
    read_limit = limit if room is None else min(limit, room)
    try:
        with storage_errors("store the uploaded file", "Nothing was stored."):
            upload = await parse_upload(request, partial, read_limit)
    except UploadTooLarge:
        if read_limit < limit:
            with session_scope() as session:
                check_storage(session, org.id, read_limit + 1)
        raise _too_large(limit) from None
    except FormParserError as exc:
        raise bad_request(f"Malformed multipart body: {exc}") from None
    try:
        return await _store_upload(upload, partial, blobs, storage_key, org, request)
    except BaseException:
        partial.unlink(missing_ok=True)
        blobs.path(storage_key).unlink(missing_ok=True)
        raise


def _too_large(limit: int) -> Exception:
    return bad_request(
        f"File is larger than the {limit:,}-byte limit (OPENFT_MAX_UPLOAD_BYTES). Split it into smaller files.",
        param="file",
        code="file_too_large",
    )


async def _validate_in_worker(request: Request, path, model: str):
    """Validate in a worker process (openft.data.validation_pool), so the CPU work never holds this process's
    GIL, within OPENFT_VALIDATION_TIMEOUT_SECONDS; the worker is killed as soon as the client disconnects."""
    from openft.data.validation_pool import ValidationAbandoned, validate_isolated

    abandon = threading.Event()
    work = asyncio.ensure_future(run_in_threadpool(validate_isolated, path, model, abandon))
    try:
        while True:
            done, _ = await asyncio.wait({work}, timeout=DISCONNECT_POLL_S)
            if done:
                return work.result()
            if await request.is_disconnected():
                abandon.set()
                try:
                    await work
                except ValidationAbandoned:
                    pass
                raise bad_request("The client disconnected before validation finished; nothing was stored.",
                                  param="file")
    finally:
        abandon.set()  # a cancelled request (server shutting down) stops its worker too


async def _store_upload(
    upload, destination, blobs: BlobStore, storage_key: str, org: Organization, request: Request
) -> FileObject:
    if upload.file_parts != 1 or upload.filename is None:
        raise bad_request("Missing required parameter: 'file' (send exactly one file part).", param="file")
    purpose = upload.fields.get("purpose")
    if not purpose:
        raise bad_request("Missing required parameter: 'purpose'.", param="purpose")
    if purpose not in PURPOSES:
        raise bad_request(
            f"Invalid value for 'purpose': '{purpose}'. Expected one of {', '.join(PURPOSES)}.",
            param="purpose",
        )
    if purpose == "fine-tune" and not upload.filename.lower().endswith(".jsonl"):
        raise bad_request(
            f"Invalid file format for fine-tuning: '{upload.filename}'. Upload a .jsonl file.", param="file"
        )
    created_at = int(time.time())
    expires_at = _expiry(upload.fields, created_at)
    status, details, report = "processed", None, None
    if purpose == "fine-tune":
        from openft.data.validation_service import UnknownValidationModel

        model = upload.fields.get("model") or get_settings().validation_model
        try:
            outcome = await _validate_in_worker(request, destination, model)
        except UnknownValidationModel as exc:
            raise bad_request(f"{exc} List base models with GET /v1/models.", param="model") from None
        status, details, report = outcome.status, outcome.status_details, outcome.report
    with session_scope() as session:
        check_storage(session, org.id, upload.size)  # exact size now; uploads in parallel may have used the room
        with storage_errors("store the uploaded file", "Nothing was stored."):
            blobs.commit(destination, storage_key)
        row = file_store.add_file(
            session,
            file_id=new_id("file-"),
            organization_id=org.id,
            filename=upload.filename,
            purpose=purpose,
            size=upload.size,
            storage_key=storage_key,
            status=status,
            status_details=details,
            validation=report,
            expires_at=expires_at,
            created_at=created_at,
        )
        return to_wire(row)


@router.get("", response_model=ListEnvelope[FileObject])
def list_files(
    org: Org,
    after: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
    order: Literal["asc", "desc"] = "desc",
    purpose: str | None = None,
) -> ListEnvelope[FileObject]:
    with session_scope() as session:
        try:
            page = file_store.list_files(
                session, org.id, after=after, limit=limit, order=order, purpose=purpose
            )
        except UnknownCursor:
            raise bad_request(f"No file with id '{after}' to list after.", param="after") from None
        return ListEnvelope.of([to_wire(row) for row in page.rows], page.has_more)


@router.get("/{file_id}", response_model=FileObject)
def retrieve_file(file_id: str, org: Org) -> FileObject:
    with session_scope() as session:
        row = file_store.get_file(session, org.id, file_id)
        if row is None:
            raise _file_not_found(file_id)
        return to_wire(row)


@router.delete("/{file_id}", response_model=FileDeleted)
def delete_file(file_id: str, org: Org) -> FileDeleted:
    with session_scope() as session:
        row = file_store.get_file(session, org.id, file_id)
        if row is None:
            raise _file_not_found(file_id)
        storage_key = row.storage_key
    # Record marked, bytes removed, record removed: a disk that refuses answers an error and keeps the file.
    file_store.delete_file_and_blob(file_id, storage_key, _blobs())
    return FileDeleted(id=file_id)


@router.get("/{file_id}/content")
def file_content(file_id: str, org: Org) -> FileResponse:
    with session_scope() as session:
        row = file_store.get_file(session, org.id, file_id)
        if row is None:
            raise _file_not_found(file_id)
        path = _blobs().path(row.storage_key)
        filename = row.filename
    if not path.is_file():
        raise StorageFault("missing", f"read the content of {file_id}", "no bytes are stored under this file")
    return FileResponse(path, media_type="application/octet-stream", filename=filename)


@router.get("/{file_id}/validation")
def file_validation(file_id: str, org: Org) -> JSONResponse:
    """openft extension: the full validation report of a fine-tune upload (every problem, with line numbers)."""
    with session_scope() as session:
        row = file_store.get_file(session, org.id, file_id)
        if row is None:
            raise _file_not_found(file_id)
        if row.validation is None:
            raise bad_request(
                f"File {file_id} has purpose '{row.purpose}'; only fine-tune files are validated.", param="id"
            )
        body = {"object": "file.validation", "file_id": row.id, "status": row.status, **row.validation}
    return JSONResponse(body)

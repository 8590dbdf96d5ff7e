"""Storage faults and quotas as OpenAI error envelopes with statuses chosen for the SDK.

The openai SDK retries 408, 409, 429 and every 5xx unless the answer carries ``x-should-retry: false``.
A full or read-only disk is the server's fault, so it keeps a 5xx status (507 Insufficient Storage,
503 Service Unavailable), but retrying in a second cannot help, so the header tells the SDK not to.
Quotas: the storage quota is a 400 (the upload cannot succeed as it is); the active-jobs limit is a
429 like OpenAI's, also marked not to be retried blindly (a job slot frees up in minutes, not seconds).
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import OperationalError

from openft.api.errors import OpenAIError
from openft.store.blobs import StorageFault
from openft.store.quotas import QuotaExceeded

log = logging.getLogger(__name__)
NO_RETRY = {"x-should-retry": "false"}
STATUS = {"full": 507, "read_only": 503, "missing": 503, "io_error": 503}
CODE = {"full": "insufficient_storage", "read_only": "storage_read_only", "missing": "storage_missing",
        "io_error": "storage_error"}


def storage_fault_response(fault: StorageFault) -> JSONResponse:
    error = OpenAIError(STATUS[fault.kind], fault.describe(), type="server_error", code=CODE[fault.kind])
    return JSONResponse(error.body(), status_code=error.status, headers=NO_RETRY)


def database_fault(exc: OperationalError) -> StorageFault | None:
    """SQLite's own disk errors, which reach us as OperationalError rather than OSError."""
    text = str(exc.orig if exc.orig is not None else exc).lower()
    if "disk is full" in text or "disk full" in text:
        return StorageFault("full", "write to the database", "database or disk is full")
    if "readonly" in text or "read-only" in text:
        return StorageFault("read_only", "write to the database", "attempt to write a readonly database")
    if "disk i/o error" in text:
        return StorageFault("io_error", "write to the database", "disk I/O error")
    return None


def quota_response(exc: QuotaExceeded) -> JSONResponse:
    status, code = (429, "active_jobs_limit_exceeded") if exc.kind == "active_jobs" else (400, "storage_quota_exceeded")
    error = OpenAIError(status, exc.message, param=exc.param, code=code)
    return JSONResponse(error.body(), status_code=status, headers=NO_RETRY)


def install_storage_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StorageFault)
    async def _storage_fault(_request: Request, exc: StorageFault) -> JSONResponse:
        log.error("storage fault: %s", exc)
        return storage_fault_response(exc)

    @app.exception_handler(QuotaExceeded)
    async def _quota(_request: Request, exc: QuotaExceeded) -> JSONResponse:
        return quota_response(exc)

    @app.exception_handler(OperationalError)
    async def _database_error(_request: Request, exc: OperationalError) -> JSONResponse:
        fault = database_fault(exc)
        if fault is not None:
            log.error("database storage fault: %s", exc)
            return storage_fault_response(fault)
        log.exception("unhandled database error", exc_info=exc)
        error = OpenAIError(500, "The server had an error processing your request.", type="server_error")
        return JSONResponse(error.body(), status_code=500)

"""The FastAPI application: routers, error envelope, start-up (migrations, first key)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from openft import __version__
from openft.api import evals, files, fine_tuning, models
from openft.api.errors import install_error_handlers
from openft.config import get_settings
from openft.store.accounts import NewKey, ensure_first_key
from openft.store.db import session_scope, upgrade_database

log = logging.getLogger(__name__)


def announce_first_key(new_key: NewKey) -> None:
    print(
        f"\nCreated the first API key for organization '{new_key.organization}' (shown only once):\n\n"
        f"    {new_key.key}\n\nUse it as OPENAI_API_KEY with OPENAI_BASE_URL=http://<host>:<port>/v1\n",
        flush=True,
    )


def prepare_storage(on_first_key: Callable[[NewKey], None] = announce_first_key) -> None:
    upgrade_database()
    with session_scope() as session:
        new_key = ensure_first_key(session)
    if new_key is not None:
        on_first_key(new_key)


def create_app(*, prepare: bool = True, embedded_worker: bool | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if prepare:
            prepare_storage()
        worker = None
        if embedded_worker if embedded_worker is not None else get_settings().embedded_worker:
            from openft.training.worker import start_embedded_worker

            worker = start_embedded_worker()
        yield
        if worker is not None:
            worker.stop()

    app = FastAPI(title="openft", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(files.router)
    app.include_router(fine_tuning.router)
    app.include_router(models.router)
    app.include_router(evals.router)

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    return app

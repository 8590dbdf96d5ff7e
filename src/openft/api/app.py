"""The FastAPI application: routers, error envelope, start-up (migrations, first key)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from openft import __version__
from openft.api import chat, evals, files, fine_tuning, models, moderations, openai_evals
from openft.api import distillations as distillations_api
from openft.api import graders as graders_api
from openft.api.access_log import install_access_log_filter
from openft.api.docs import docs_enabled, install_docs
from openft.api.errors import install_error_handlers
from openft.api.openapi_bodies import install_request_schemas
from openft.api.request_guard import RequestGuard
from openft.api.request_id import RequestIdMiddleware, install_request_id_log_filter
from openft.api.serving_state import EngineRegistry
from openft.api.storage_errors import install_storage_error_handlers
from openft.config import get_settings
from openft.store.accounts import NewKey, ensure_first_key
from openft.store.db import session_scope, upgrade_database
from openft.web import routes as web_routes

log = logging.getLogger(__name__)


def announce_first_key(new_key: NewKey) -> None:
    print(
        f"\nCreated the first API key for organization '{new_key.organization}' (shown only once):\n\n"
        f"    {new_key.key}\n\nUse it as OPENAI_API_KEY with OPENAI_BASE_URL=http://<host>:<port>/v1\n",
        flush=True,
    )


def prepare_storage(on_first_key: Callable[[NewKey], None] = announce_first_key) -> None:
    from openft.store.home import secure_home
    from openft.store.reaper import reap_safely

    secure_home()  # OPENFT_HOME 0700, files 0600 (issue 14)
    upgrade_database()
    with session_scope() as session:
        new_key = ensure_first_key(session)
    if new_key is not None:
        on_first_key(new_key)
    reap_safely()  # expired files, interrupted deletes, orphaned blobs and partial uploads


def _vllm_backend():
    """`OPENFT_VLLM_URL` set: chat and completions go to that vLLM server (docs/serving.md)."""
    from openft.api.serving_state import vllm_from_settings

    return vllm_from_settings()


def create_app(*, prepare: bool = True, embedded_worker: bool | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        install_access_log_filter()  # again: the server's log set-up ran after create_app
        install_request_id_log_filter()
        reaper = None
        if prepare:
            from openft.store.reaper import start_periodic_reaper

            prepare_storage()
            reaper = start_periodic_reaper()
        worker = None
        if embedded_worker if embedded_worker is not None else get_settings().embedded_worker:
            from openft.jobs.worker import start_embedded_worker

            worker = start_embedded_worker()
        _app.state.engines = EngineRegistry()
        _app.state.vllm, _app.state.vllm_fallback_local = _vllm_backend()
        yield
        if worker is not None:
            worker.stop()
        if reaper is not None:
            reaper.set()
        _app.state.engines.close()

    # /docs is served from bundled assets (api/docs.py), never from a CDN.
    app = FastAPI(title="openft", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if docs_enabled() else None)
    install_error_handlers(app)
    # Key, rate limit and body size are checked before any route reads the body (api/request_guard.py).
    app.add_middleware(RequestGuard)
    app.add_middleware(RequestIdMiddleware)  # added last = outermost: every response gets x-request-id
    install_request_id_log_filter()
    install_access_log_filter()
    if docs_enabled():
        install_docs(app)
        install_request_schemas(app)  # /openapi.json describes the JSON bodies the routes check by hand
    install_storage_error_handlers(app)
    app.include_router(files.router)
    app.include_router(fine_tuning.router)
    app.include_router(models.router)
    app.include_router(evals.router)
    app.include_router(graders_api.router)
    app.include_router(openai_evals.router)
    app.include_router(moderations.router)
    app.include_router(distillations_api.router)
    app.include_router(chat.router)
    app.include_router(web_routes.router)  # the dashboard: / redirects to /ui/

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    return app

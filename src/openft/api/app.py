"""The FastAPI application: routers, error envelope, start-up (migrations, first key)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from openft import __version__
from openft.api import chat, evals, files, fine_tuning, models
from openft.api.errors import install_error_handlers
from openft.api.serving_state import EngineRegistry
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
    upgrade_database()
    with session_scope() as session:
        new_key = ensure_first_key(session)
    if new_key is not None:
        on_first_key(new_key)


def _vllm_backend():
    """`OPENFT_VLLM_URL` set: chat and completions go to that vLLM server (started with --enable-lora)."""
    settings = get_settings()
    if not settings.vllm_url:
        return None, {}
    from pathlib import Path

    from openft.serving.vllm_backend import VLLMBackend

    adapters: dict[str, str | None] = {}

    def adapter_path(name: str) -> Path | None:
        path = adapters.get(name)
        return Path(path) if path else None

    backend = VLLMBackend(settings.vllm_url, settings.vllm_model or settings.validation_model, adapter_path,
                          api_key=settings.vllm_api_key)
    return backend, adapters


def create_app(*, prepare: bool = True, embedded_worker: bool | None = None) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if prepare:
            prepare_storage()
        worker = None
        if embedded_worker if embedded_worker is not None else get_settings().embedded_worker:
            from openft.training.worker import start_embedded_worker

            worker = start_embedded_worker()
        _app.state.engines = EngineRegistry()
        _app.state.vllm, _app.state.vllm_adapters = _vllm_backend()
        yield
        if worker is not None:
            worker.stop()
        _app.state.engines.close()

    app = FastAPI(title="openft", version=__version__, lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(files.router)
    app.include_router(fine_tuning.router)
    app.include_router(models.router)
    app.include_router(evals.router)
    app.include_router(chat.router)
    app.include_router(web_routes.router)  # the dashboard: / redirects to /ui/

    @app.get("/health", include_in_schema=False)
    def health() -> dict:
        return {"status": "ok", "version": __version__}

    return app

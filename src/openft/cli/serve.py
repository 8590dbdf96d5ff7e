"""`openft serve`: the API server (and, in the embedded default, its worker)."""

from __future__ import annotations

import os

import typer

from openft.config import SettingsError, get_settings, reset_settings


def serve(
    host: str = typer.Option(None, help="Interface to bind (default 127.0.0.1, or OPENFT_HOST)."),
    port: int = typer.Option(None, help="Port (default 8000, or OPENFT_PORT)."),
    home: str = typer.Option(None, help="State folder (default ~/.openft, or OPENFT_HOME)."),
    log_level: str = typer.Option("info", help="uvicorn log level."),
    no_worker: bool = typer.Option(False, "--no-worker", help="Run no job worker here (use `openft worker`)."),
) -> None:
    """Start the OpenAI-compatible API server."""
    import uvicorn

    from openft.api.app import create_app

    if home:
        os.environ["OPENFT_HOME"] = home
        reset_settings()
    settings = get_settings()
    from openft.api.serving_state import ServingLimits

    try:  # the serving limits are read when the app starts; a typo should stop here, on one line
        ServingLimits.from_env()
    except ValueError as error:
        raise SettingsError(str(error)) from None
    settings.home.mkdir(parents=True, exist_ok=True)
    bind_host = host or settings.host
    bind_port = port or settings.port
    typer.echo(f"openft home:      {settings.home}\nopenft API:       http://{bind_host}:{bind_port}/v1")
    typer.echo(f"openft dashboard: http://{bind_host}:{bind_port}/")
    app = create_app(embedded_worker=False if no_worker else None)
    uvicorn.run(app, host=bind_host, port=bind_port, log_level=log_level)

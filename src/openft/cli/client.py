"""How the CLI reaches an openft server: base URL and key options, the `openai` client, errors and output.

The server comes from --base-url, else $OPENFT_BASE_URL, else $OPENAI_BASE_URL (default
http://127.0.0.1:8000/v1); the key from --api-key, else $OPENFT_API_KEY, else $OPENAI_API_KEY.
The openft variables come first so a shell can hold keys for both openft and OpenAI itself.
Exit codes: 0 success, 1 the server refused the request (its message and parameter are printed),
2 the server could not be reached or the CLI was not configured.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

import typer
from rich.console import Console

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
BASE_URL_ENV = ("OPENFT_BASE_URL", "OPENAI_BASE_URL")
API_KEY_ENV = ("OPENFT_API_KEY", "OPENAI_API_KEY")
EXIT_API_ERROR = 1
EXIT_UNREACHABLE = 2

BaseUrlOption = typer.Option(
    None,
    "--base-url",
    envvar=list(BASE_URL_ENV),
    show_envvar=True,
    help=f"openft API URL (default: {DEFAULT_BASE_URL}).",
)
ApiKeyOption = typer.Option(None, "--api-key", envvar=list(API_KEY_ENV), show_envvar=True, help="openft API key.")
JsonOption = typer.Option(False, "--json", help="Print JSON for scripts instead of tables.")

# Tests swap this for one with an in-memory transport; None lets the SDK build its own HTTP client.
http_client_factory: Callable[[], Any] | None = None


def stdout() -> Console:
    # A wide fallback when piped, so ids and model names are not cut; no emoji codes, since model names
    # such as ft:base:org:x:1234 would otherwise show ":x:" as an emoji.
    return Console(width=None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "160")), emoji=False)


def stderr() -> Console:
    return Console(stderr=True, emoji=False)


def fail(message: str, code: int = EXIT_API_ERROR) -> typer.Exit:
    """Print ``message`` on stderr and return the Exit to raise."""
    typer.echo(message, err=True)
    return typer.Exit(code)


def resolve_base_url(base_url: str | None) -> str:
    return (base_url or DEFAULT_BASE_URL).rstrip("/")


def make_client(base_url: str | None, api_key: str | None, *, timeout: float = 120.0):  # -> openai.OpenAI
    """An `openai.OpenAI` client for the openft server (few retries: a CLI should answer quickly)."""
    from openai import OpenAI

    if not api_key:
        raise fail(
            "No API key: pass --api-key or set OPENFT_API_KEY (or OPENAI_API_KEY). "
            "Create one with `openft keys create`.",
            EXIT_UNREACHABLE,
        )
    http_client = http_client_factory() if http_client_factory is not None else None
    return OpenAI(
        base_url=resolve_base_url(base_url), api_key=api_key, max_retries=1, timeout=timeout, http_client=http_client
    )


@contextmanager
def api_errors(base_url: str | None) -> Iterator[None]:
    """Turn SDK exceptions into one clear line on stderr and the CLI's exit codes."""
    import openai

    try:
        yield
    except openai.APIConnectionError:
        url = resolve_base_url(base_url)
        raise fail(
            f"The openft server is not reachable at {url}. Start it with `openft serve` "
            "(or point --base-url / OPENFT_BASE_URL at a running one).",
            EXIT_UNREACHABLE,
        ) from None
    except openai.APIStatusError as error:
        raise fail(describe_api_error(error)) from None


def describe_api_error(error: Any) -> str:
    """`Error 404 (param: id): No such File object: file-x`, from the OpenAI error envelope."""
    body = error.body if isinstance(error.body, dict) else {}
    message = body.get("message") or error.message
    param = f" (param: {error.param})" if error.param else ""
    hint = " Check --api-key / OPENFT_API_KEY." if error.status_code == 401 else ""
    return f"Error {error.status_code}{param}: {message}{hint}"


def to_plain(value: Any) -> Any:
    """SDK objects (pydantic models) and lists of them as plain JSON-able data."""
    if isinstance(value, list):
        return [to_plain(item) for item in value]
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return value


def print_json(value: Any) -> None:
    typer.echo(json.dumps(to_plain(value), indent=2))


def timestamp(seconds: int | float | None) -> str:
    if not seconds:
        return ""
    return datetime.fromtimestamp(seconds).strftime("%Y-%m-%d %H:%M:%S")

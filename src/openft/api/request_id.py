"""`x-request-id` on every response, and the same id in the server's access-log line.

OpenAI answers every request with its own `x-request-id` (`req_` + 32 hex digits); the SDK exposes it as
`response._request_id` and users quote it when they report a problem. The middleware is the outermost layer, so
responses that never reach a route (401, 413, 429 from the request guard, 404 for an unknown path) carry it too.
A client's own `X-Client-Request-Id` is not echoed (OpenAI does not either) but is logged next to ours.
"""

from __future__ import annotations

import contextvars
import logging
import re
import secrets

from starlette.types import ASGIApp, Message, Receive, Scope, Send

HEADER = b"x-request-id"
CLIENT_HEADER = b"x-client-request-id"
ACCESS_LOGGER = "uvicorn.access"
MAX_CLIENT_ID_CHARS = 128
REQUEST_ID_PATTERN = re.compile(r"^req_[0-9a-f]{32}$")

# Set for the task that serves one request; uvicorn writes its access line from that task (in `send`).
current_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("openft_request_id", default=None)
_client_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("openft_client_id", default=None)


def new_request_id() -> str:
    return "req_" + secrets.token_hex(16)


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        current_request_id.set(request_id)
        client_id = dict(scope.get("headers") or []).get(CLIENT_HEADER)
        _client_request_id.set(_printable(client_id) if client_id else None)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != HEADER]
                message = {**message, "headers": [*headers, (HEADER, request_id.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_id)


def _printable(raw: bytes) -> str:
    """A client-chosen id goes into a log line: keep it short and on one line."""
    text = raw.decode("latin-1")[:MAX_CLIENT_ID_CHARS]
    return "".join(ch if ch.isprintable() and not ch.isspace() else "_" for ch in text)


class RequestIdLogFilter(logging.Filter):
    """Puts ` request_id=req_...` (and the client's id, if it sent one) into each access-log line.

    uvicorn's access formatter unpacks exactly five arguments (client, method, path, version, status), so the id
    rides on the first one: `127.0.0.1:5000 request_id=req_... - "GET /v1/models HTTP/1.1" 200`.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        args = record.args
        if request_id and isinstance(args, tuple) and args and isinstance(args[0], str) \
                and "request_id=" not in args[0]:
            tag = f" request_id={request_id}"
            client_id = _client_request_id.get()
            if client_id:
                tag += f" client_request_id={client_id}"
            record.args = (args[0] + tag, *args[1:])
        return True


def install_request_id_log_filter() -> None:
    """Idempotent; called at app creation and again at start-up (uvicorn configures its loggers in between)."""
    logger = logging.getLogger(ACCESS_LOGGER)
    if not any(isinstance(f, RequestIdLogFilter) for f in logger.filters):
        logger.addFilter(RequestIdLogFilter())

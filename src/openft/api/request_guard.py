"""The door every request passes before any route runs: key, rate limit, body size, body text.

FastAPI reads and parses a JSON body before it resolves dependencies, so a key checked by a dependency is
checked after the body is in memory. This ASGI middleware runs first and, for /v1:
1. authenticates the `Authorization` header (the organization is handed to `auth.current_org`), so an
   unauthenticated 100 MB body is refused without reading a byte of it;
2. applies the per-key request rate limit (429 + retry-after, see rate_limits.py);
then, for every request with a body except streamed uploads (they enforce their own cap while streaming):
3. refuses a body over ``OPENFT_MAX_REQUEST_BYTES`` with 413, from Content-Length before reading and from
   the running count while reading;
4. refuses JSON text that holds an unpaired UTF-16 surrogate escape (``"\\ud800"``): it parses, but no
   tokenizer, database or encoder can take it; the 400 names the parameter.
The body read here is handed on to the route unchanged, and later `receive` calls (disconnect polling) go
to the server.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from anyio import to_thread
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from openft.api.auth import ORG_STATE, authenticate_header, key_fingerprint
from openft.api.errors import OpenAIError, bad_request, error_response
from openft.api.rate_limits import KEY_STATE, LIMITER_STATE, RateLimiter
from openft.config import SettingsError

DEFAULT_MAX_REQUEST_BYTES = 32 * 1024 * 1024
# Routes that stream their body to storage and enforce OPENFT_MAX_UPLOAD_BYTES themselves.
STREAMED_BODY_PATHS = frozenset({"/v1/files"})
API_PREFIX = "/v1/"
# A JSON escape for a code point in the surrogate range; only then is the (rare) full check needed.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class GuardSettings:
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    requests_per_minute: int = 0  # 0: no limit
    tokens_per_minute: int = 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if value < 0:
        raise SettingsError(f"{name} must be 0 or more, got {raw!r}")
    return value


def guard_settings_from_env() -> GuardSettings:
    return GuardSettings(
        max_request_bytes=_env_int("OPENFT_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES) or DEFAULT_MAX_REQUEST_BYTES,
        requests_per_minute=_env_int("OPENFT_RATE_LIMIT_RPM", 0),
        tokens_per_minute=_env_int("OPENFT_RATE_LIMIT_TPM", 0),
    )


def body_too_large(limit: int, size: int | None = None) -> OpenAIError:
    told = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return OpenAIError(
        413,
        f"The request body is {told}; this server accepts at most {limit:,} bytes per request "
        "(OPENFT_MAX_REQUEST_BYTES). Upload large data as a file with POST /v1/files.",
        param=None,
        code="request_too_large",
    )


def lone_surrogate_path(value: Any) -> str | None:
    """The JSON path of the first string (or key) holding an unpaired surrogate, or None. Iterative: bodies
    may nest thousands of levels."""
    stack: list[tuple[str, Any]] = [("", value)]
    while stack:
        path, item = stack.pop()
        if isinstance(item, str):
            if _LONE_SURROGATE.search(item):
                return path or "body"
        elif isinstance(item, dict):
            for key, child in reversed(list(item.items())):
                child_path = f"{path}.{key}" if path else str(key)
                if _LONE_SURROGATE.search(key):
                    return path or "body"
                stack.append((child_path, child))
        elif isinstance(item, list):
            stack.extend((f"{path}[{index}]", child) for index, child in reversed(list(enumerate(item))))
    return None


def check_body_text(body: bytes) -> None:
    """400 for JSON whose strings hold unpaired surrogates; anything else is left to the route."""
    if not _SURROGATE_ESCAPE.search(body):
        return
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        return  # not JSON: the route answers its own parse error
    path = lone_surrogate_path(parsed)
    if path is not None:
        raise bad_request(
            f"Invalid value for '{path}': the text holds an unpaired UTF-16 surrogate escape (such as \\ud800), "
            "which is not valid Unicode. Send the character itself or a complete surrogate pair.",
            param=path,
            code="invalid_unicode",
        )


class RequestGuard:
    def __init__(self, app: ASGIApp, settings: GuardSettings | None = None) -> None:
        self.app = app
        self.settings = settings or guard_settings_from_env()
        self.limiter = RateLimiter(self.settings.requests_per_minute, self.settings.tokens_per_minute)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        try:
            key = await self._authenticate(scope)
            if key is not None:
                self.limiter.admit_request(key)
            receive = await self._read_body(scope, receive)
        except OpenAIError as error:
            known_key = scope.get("state", {}).get(KEY_STATE)
            if known_key is not None and self.limiter.enabled:
                error.headers = {**self.limiter.headers(known_key), **error.headers}
            await error_response(error)(scope, receive, send)
            return
        if key is not None and self.limiter.enabled:
            send = self._with_rate_headers(send, key)
        await self.app(scope, receive, send)

    async def _authenticate(self, scope: Scope) -> str | None:
        """The key's fingerprint for /v1 requests (401 without a valid key); None elsewhere."""
        if not scope["path"].startswith(API_PREFIX):
            return None
        header = Headers(scope=scope).get("authorization", "")
        organization = await to_thread.run_sync(authenticate_header, header)
        key = key_fingerprint(header)
        state = scope.setdefault("state", {})
        state[ORG_STATE] = organization
        state[KEY_STATE] = key
        state[LIMITER_STATE] = self.limiter
        return key

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive:
        headers = Headers(scope=scope)
        if scope["path"] in STREAMED_BODY_PATHS:
            return receive
        length = headers.get("content-length")
        if length is None and "chunked" not in headers.get("transfer-encoding", "").lower():
            return receive  # no body
        limit = self.settings.max_request_bytes
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                raise bad_request("The Content-Length header is not a number.") from None
            if declared > limit:
                raise body_too_large(limit, declared)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return _replay(b"", receive, disconnected=True)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise body_too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        check_body_text(body)
        return _replay(body, receive)

    def _with_rate_headers(self, send: Send, key: str) -> Send:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.encode(), v.encode()) for k, v in self.limiter.headers(key).items()]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        return send_with_headers


def _replay(body: bytes, receive: Receive, disconnected: bool = False) -> Receive:
    """A `receive` that first hands over the body already read, then defers to the server's."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            if disconnected:
                return {"type": "http.disconnect"}
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay

"""Calling the teacher: any OpenAI-compatible endpoint (through the outbound allow-list, with retries and backoff)
or a model openft serves itself (in-process engines, as evaluations use).

A request is retried on 408, 409, 429, 5xx, timeouts and dropped connections, waiting what the server's
`retry-after-ms` / `retry-after` asks, else an exponential backoff with jitter. 401, 403 and 404 stop the whole
distillation (every prompt would fail the same way); another 4xx fails only that prompt.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from openft.outbound import OutboundRefused, check_url

RETRY_STATUSES = frozenset({408, 409, 429})
FATAL_STATUSES = frozenset({401, 403, 404})


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6  # the first try and up to five retries
    base_delay_s: float = 0.5  # doubled on every retry
    max_delay_s: float = 30.0  # no single wait is longer, whatever retry-after asks
    timeout_s: float = 120.0  # per request


@dataclass(frozen=True)
class TeacherReply:
    message: dict[str, Any]  # the assistant message: content and/or tool_calls
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


@dataclass
class CallStats:
    """What the teacher was asked, retries included (requests that were answered from the cache are not here)."""

    requests: int = 0
    retries: int = 0
    statuses: dict[str, int] = field(default_factory=dict)  # failures seen, by status or "timeout"/"connection"

    def saw(self, what: str) -> None:
        self.statuses[what] = self.statuses.get(what, 0) + 1


class TeacherFatal(RuntimeError):
    """Every prompt would fail the same way (a refused key, an unknown model, a URL that may not be reached)."""


class PromptFailed(RuntimeError):
    """This prompt got no answer (a 400, or retries exhausted)."""


def reply_from(body: dict[str, Any]) -> TeacherReply:
    """The first choice and usage of an OpenAI chat.completion body; PromptFailed when it has none."""
    try:
        choice = body["choices"][0]
        message = choice["message"]
    except (KeyError, IndexError, TypeError):
        raise PromptFailed("the teacher's answer has no choices[0].message") from None
    kept = {"role": "assistant", "content": message.get("content")}
    if message.get("tool_calls"):
        kept["tool_calls"] = [
            {"id": c.get("id"), "type": "function",
             "function": {"name": c["function"]["name"], "arguments": c["function"].get("arguments") or "{}"}}
            for c in message["tool_calls"]
        ]  # fmt: skip
    usage = body.get("usage") or {}
    return TeacherReply(kept, choice.get("finish_reason"), int(usage.get("prompt_tokens") or 0),
                        int(usage.get("completion_tokens") or 0))  # fmt: skip


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """What the server asked to wait: `retry-after-ms`, or `retry-after` in seconds or as an HTTP date."""
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(float(ms) / 1000, 0.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw) if raw.strip() else None
        return None if parsed is None else max(parsed.timestamp() - time.time(), 0.0)


def backoff_seconds(policy: RetryPolicy, retry: int, asked: float | None) -> float:
    if asked is not None:
        return min(asked, policy.max_delay_s)
    ceiling = min(policy.base_delay_s * 2**retry, policy.max_delay_s)
    return ceiling / 2 + random.uniform(0, ceiling / 2)  # jitter: parallel requests do not retry in lockstep


class _GuardedAsyncTransport(httpx.AsyncBaseTransport):
    """openft.outbound's check on every connection, for the async client (no redirects are followed)."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        try:
            await asyncio.to_thread(check_url, str(request.url))
        except OutboundRefused as exc:
            raise TeacherFatal(f"openft refused to connect to the teacher: {exc}") from None
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def _error_text(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])[:500]
    except (ValueError, KeyError, TypeError):
        return response.text[:500]


class RemoteTeacher:
    """An OpenAI-compatible endpoint: `await answer(body)` with retries; `stats` counts every request sent."""

    def __init__(self, base_url: str, api_key: str | None, policy: RetryPolicy,
                 sleep: Callable[[float], Any] = asyncio.sleep) -> None:  # fmt: skip
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.policy, self.sleep, self.stats = policy, sleep, CallStats()
        self.client = httpx.AsyncClient(transport=_GuardedAsyncTransport(), follow_redirects=False, headers=headers,
                                        timeout=httpx.Timeout(policy.timeout_s, connect=min(policy.timeout_s, 10)))

    async def answer(self, body: dict[str, Any]) -> TeacherReply:
        last = "no attempt"
        for attempt in range(self.policy.max_attempts):
            if attempt:
                self.stats.retries += 1
            self.stats.requests += 1
            asked = None
            try:
                response = await self.client.post(self.url, json=body)
            except httpx.TimeoutException:
                self.stats.saw("timeout")
                last = f"timed out after {self.policy.timeout_s:g} s"
            except httpx.TransportError as exc:
                self.stats.saw("connection")
                last = f"connection failed ({type(exc).__name__}: {exc})"
            else:
                status = response.status_code
                if status == 200:
                    try:
                        return reply_from(response.json())
                    except ValueError:
                        raise PromptFailed("the teacher answered 200 with a body that is not JSON") from None
                self.stats.saw(str(status))
                last = f"HTTP {status}: {_error_text(response)}"
                if status in FATAL_STATUSES:
                    raise TeacherFatal(f"the teacher answered {last}")
                retryable = status in RETRY_STATUSES or status >= 500
                if not retryable or response.headers.get("x-should-retry") == "false":
                    raise PromptFailed(last)
                asked = retry_after_seconds(response.headers)
            if attempt + 1 < self.policy.max_attempts:
                await self.sleep(backoff_seconds(self.policy, attempt, asked))
        raise PromptFailed(f"no answer after {self.policy.max_attempts} attempts; last: {last}")

    async def close(self) -> None:
        await self.client.aclose()


class LocalTeacher:
    """A model openft serves to the organization (base, `ft:` or checkpoint), on engines inside this process."""

    def __init__(self, organization_id: str) -> None:
        from openft.evals.local_models import LocalModels
        from openft.serving.backend import LocalBackend

        self.models = LocalModels(organization_id)
        self.backend = LocalBackend(self.models.route)
        self.stats = CallStats()

    async def answer(self, body: dict[str, Any]) -> TeacherReply:
        self.stats.requests += 1
        try:
            return reply_from(await self.backend.chat_completion(body))
        except PromptFailed:
            raise
        except Exception as exc:  # noqa: BLE001 - e.g. a prompt longer than the model's context
            self.stats.saw(type(exc).__name__)
            raise PromptFailed(f"{type(exc).__name__}: {exc}"[:500]) from None

    async def close(self) -> None:
        await asyncio.to_thread(self.models.close)

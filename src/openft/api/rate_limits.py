"""Per-key request and token rate limits, answered the way OpenAI answers them.

Both limits are token buckets per API key, refilled continuously: a key may spend its whole per-minute
allowance at once, then one request (or token) every 60/limit seconds. Off by default (limit 0); set
``OPENFT_RATE_LIMIT_RPM`` and ``OPENFT_RATE_LIMIT_TPM``. The buckets live in this process: several
`openft serve` processes behind one address each allow the full limit.

Tokens are reserved before generation from an estimate (prompt characters / 4 + max_tokens x n, as OpenAI
estimates) and the reservation is settled with the real usage once a whole (non-streaming) answer is known.
A refused request gets 429 with OpenAI's body (type "requests" or "tokens", code "rate_limit_exceeded"),
``retry-after`` / ``retry-after-ms``, and every /v1 answer carries OpenAI's ``x-ratelimit-*`` headers.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any

from openft.api.errors import OpenAIError

DEFAULT_MAX_TOKENS = 256  # what the engine generates when a request names no max_tokens
CHARS_PER_TOKEN = 4


@dataclass
class _Bucket:
    level: float
    updated: float


class _Limit:
    """One kind of allowance (requests or tokens) for every key."""

    def __init__(self, per_minute: int, clock) -> None:
        self.per_minute = per_minute
        self._rate = per_minute / 60.0
        self._clock = clock
        self._buckets: dict[str, _Bucket] = {}

    def _bucket(self, key: str) -> _Bucket:
        now = self._clock()
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self._buckets[key] = _Bucket(float(self.per_minute), now)
        else:
            bucket.level = min(float(self.per_minute), bucket.level + (now - bucket.updated) * self._rate)
            bucket.updated = now
        return bucket

    def take(self, key: str, amount: float) -> float:
        """Spend `amount`; returns 0 when spent, else the seconds until it could be (nothing is spent)."""
        bucket = self._bucket(key)
        if amount <= bucket.level:
            bucket.level -= amount
            return 0.0
        return (amount - bucket.level) / self._rate

    def give_back(self, key: str, amount: float) -> None:
        bucket = self._bucket(key)
        bucket.level = min(float(self.per_minute), bucket.level + amount)

    def charge(self, key: str, amount: float) -> None:
        """Spend even below zero: usage that already happened (the next requests wait for it)."""
        self._bucket(key).level -= amount

    def headers(self, key: str, kind: str) -> dict[str, str]:
        bucket = self._bucket(key)
        remaining = max(0, math.floor(bucket.level))
        reset = (self.per_minute - bucket.level) / self._rate
        return {
            f"x-ratelimit-limit-{kind}": str(self.per_minute),
            f"x-ratelimit-remaining-{kind}": str(remaining),
            f"x-ratelimit-reset-{kind}": _duration(reset),
        }


def _duration(seconds: float) -> str:
    """OpenAI writes reset times like "1s", "6m0s" or "20ms"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    whole = math.ceil(seconds)
    minutes, rest = divmod(whole, 60)
    return f"{minutes}m{rest}s" if minutes else f"{rest}s"


def rate_limited(kind: str, limit: int, wait_s: float, requested: float) -> OpenAIError:
    unit = "requests per min (RPM)" if kind == "requests" else "tokens per min (TPM)"
    possible = requested <= limit
    advice = f"Please try again in {_duration(wait_s)}." if possible else "This request can never fit: send less."
    error = OpenAIError(
        429,
        f"Rate limit reached for this API key on {unit}: Limit {limit}, Requested {math.ceil(requested)}. {advice}",
        type=kind,
        code="rate_limit_exceeded",
    )
    wait = max(wait_s, 0.001) if possible else 60.0
    error.headers = {"retry-after": str(math.ceil(wait)), "retry-after-ms": str(math.ceil(wait * 1000))}
    if not possible:
        error.headers["x-should-retry"] = "false"
    return error


class RateLimiter:
    """The request and token buckets of every key; thread-safe (sync routes run in a thread pool)."""

    def __init__(self, requests_per_minute: int = 0, tokens_per_minute: int = 0, clock=time.monotonic) -> None:
        self._lock = threading.Lock()
        self.requests = _Limit(requests_per_minute, clock) if requests_per_minute > 0 else None
        self.tokens = _Limit(tokens_per_minute, clock) if tokens_per_minute > 0 else None

    @property
    def enabled(self) -> bool:
        return self.requests is not None or self.tokens is not None

    def admit_request(self, key: str) -> None:
        if self.requests is None:
            return
        with self._lock:
            wait = self.requests.take(key, 1)
        if wait:
            raise rate_limited("requests", self.requests.per_minute, wait, 1)

    def reserve_tokens(self, key: str, amount: int) -> int:
        """Reserve `amount` tokens (raises the 429); returns what was reserved, for `settle_tokens`."""
        if self.tokens is None:
            return 0
        with self._lock:
            wait = self.tokens.take(key, amount) if amount <= self.tokens.per_minute else math.inf
        if wait:
            raise rate_limited("tokens", self.tokens.per_minute, wait if wait != math.inf else 60.0, amount)
        return amount

    def settle_tokens(self, key: str, reserved: int, used: int) -> None:
        """Replace a reservation by the real usage (refund what was not used, charge any excess)."""
        if self.tokens is None or reserved == used:
            return
        with self._lock:
            if used < reserved:
                self.tokens.give_back(key, reserved - used)
            else:
                self.tokens.charge(key, used - reserved)

    def headers(self, key: str) -> dict[str, str]:
        with self._lock:
            out: dict[str, str] = {}
            if self.requests is not None:
                out |= self.requests.headers(key, "requests")
            if self.tokens is not None:
                out |= self.tokens.headers(key, "tokens")
            return out


def _text_chars(value: Any) -> int:
    """Characters of every string inside a request value (messages, prompt, tools)."""
    total, stack = 0, [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return total


def token_estimate(body: dict[str, Any]) -> int:
    """OpenAI's estimate of what a chat/completions request will use: prompt characters / 4 plus the most
    it may generate."""
    prompt_chars = _text_chars([body.get("messages"), body.get("prompt"), body.get("tools")])
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    n = body.get("n") or 1
    return math.ceil(prompt_chars / CHARS_PER_TOKEN) + int(max_tokens) * int(n)


KEY_STATE = "openft_key"
LIMITER_STATE = "openft_rate_limiter"


def reserve_request_tokens(request, body: dict[str, Any]) -> int:
    """Reserve the estimate of a chat/completions request against its key's token limit (429 when spent)."""
    state = request.scope.get("state", {})
    limiter: RateLimiter | None = state.get(LIMITER_STATE)
    if limiter is None or limiter.tokens is None:
        return 0
    return limiter.reserve_tokens(state[KEY_STATE], token_estimate(body))


def settle_request_tokens(request, reserved: int, response: dict[str, Any]) -> None:
    """Charge the tokens a whole answer really used instead of the estimate reserved for it."""
    state = request.scope.get("state", {})
    limiter: RateLimiter | None = state.get(LIMITER_STATE)
    usage = response.get("usage") if isinstance(response, dict) else None
    if limiter is None or not reserved or not isinstance(usage, dict):
        return
    limiter.settle_tokens(state[KEY_STATE], reserved, int(usage.get("total_tokens") or 0))


def refund_request_tokens(request, reserved: int) -> None:
    """A request the engine refused used no tokens."""
    settle_request_tokens(request, reserved, {"usage": {"total_tokens": 0}})

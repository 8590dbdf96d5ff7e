"""Bounded work per request: the key is checked before the body is read, bodies are capped before parsing, and
per-key request and token rate limits answer 429 the way OpenAI does."""

from __future__ import annotations

import socket
import time

import httpx
import openai
import pytest

from tests.api.hostile_helpers import auth, error_of, root_url, start_hostile_server
from tests.fixtures.server import stop_server

MB = 1024 * 1024
CAP = 1 * MB
RPM = 5
TPM = 1000


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    live = start_hostile_server(
        tmp_path_factory.mktemp("hostile-limits"),
        tiny_model_dir,
        {"OPENFT_MAX_REQUEST_BYTES": str(CAP), "OPENFT_RATE_LIMIT_RPM": str(RPM), "OPENFT_RATE_LIMIT_TPM": str(TPM)},
    )
    yield live
    stop_server(live)


def _raw_post(server, path: str, headers: dict[str, str], declared: int, send_bytes: int) -> tuple[bytes, int]:
    """POST `declared` bytes of body but stop after `send_bytes` or once the server answers; returns the
    response head and how many body bytes went out."""
    host, port = root_url(server).removeprefix("http://").split(":")
    head = f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {declared}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n"
    sent = 0
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(head.encode())
        sock.setblocking(False)
        chunk = b"x" * (64 * 1024)
        answer = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                answer += sock.recv(65536)
                if b"\r\n\r\n" in answer:
                    break
            except BlockingIOError:
                pass
            if sent < send_bytes:
                try:
                    sent += sock.send(chunk)
                except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                    time.sleep(0.01)
            else:
                time.sleep(0.01)
    return answer, sent


def test_unauthenticated_100mb_body_is_refused_without_being_read(server):
    before = server.rss_bytes()
    answer, sent = _raw_post(server, "/v1/chat/completions", {}, declared=100 * MB, send_bytes=100 * MB)
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
    assert sent < 20 * MB  # answered long before the body could have been read
    assert server.rss_bytes() - before < 30 * MB


def test_declared_oversized_body_is_413_before_reading(server):
    key = server.create_key("cap-org")
    answer, sent = _raw_post(server, "/v1/chat/completions", auth(key), declared=50 * MB, send_bytes=50 * MB)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 20 * MB


def test_streamed_body_over_the_cap_is_413_in_openai_envelope(server):
    key = server.create_key("chunked-org")

    def body():
        for _ in range(3):
            yield b" " * (CAP // 2)  # chunked: no Content-Length to trust

    response = httpx.post(server.base_url + "/chat/completions", content=body(),
                          headers={**auth(key), "content-type": "application/json"}, timeout=30)
    assert response.status_code == 413
    error = error_of(response)
    assert error["code"] == "request_too_large" and "OPENFT_MAX_REQUEST_BYTES" in error["message"]
    assert response.headers["x-should-retry"] == "false"
    client = server.client(key)
    with pytest.raises(openai.APIStatusError) as caught:
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "user", "content": "x" * (2 * CAP)}])
    assert caught.value.status_code == 413


def test_request_rate_limit_answers_429_with_retry_after(server):
    key = server.create_key("rpm-org")
    with httpx.Client(base_url=server.base_url, headers=auth(key)) as api:
        first = api.get("/models")
        assert first.status_code == 200
        assert first.headers["x-ratelimit-limit-requests"] == str(RPM)
        assert int(first.headers["x-ratelimit-remaining-requests"]) == RPM - 1
        for _ in range(RPM - 1):
            assert api.get("/models").status_code == 200
        refused = api.get("/models")
    assert refused.status_code == 429
    error = error_of(refused)
    assert error["type"] == "requests" and error["code"] == "rate_limit_exceeded"
    assert 1 <= int(refused.headers["retry-after"]) <= 60 // RPM + 1
    assert int(refused.headers["retry-after-ms"]) > 0
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError):
        server.client(key).models.list()
    # another key is not affected
    assert httpx.get(server.base_url + "/models", headers=auth(server.create_key("rpm-other"))).status_code == 200


def test_token_rate_limit_counts_what_a_request_may_use(server):
    key = server.create_key("tpm-org")
    client = server.client(key, timeout=60)
    ask = [{"role": "user", "content": "hi"}]
    whole = client.chat.completions.with_raw_response.create(model="tiny-llama", messages=ask, max_tokens=3)
    assert whole.headers["x-ratelimit-limit-tokens"] == str(TPM)
    remaining = int(whole.headers["x-ratelimit-remaining-tokens"])
    assert TPM - 50 < remaining < TPM  # charged the real usage (a few tokens), not the estimate
    with pytest.raises(openai.RateLimitError) as too_big:
        client.chat.completions.create(model="tiny-llama", messages=ask, max_tokens=TPM + 1)
    assert too_big.value.response.headers["x-should-retry"] == "false"  # it can never fit
    assert error_of(too_big.value.response)["type"] == "tokens"
    # a stream keeps its whole reservation while it runs; the next large request must wait
    with client.chat.completions.create(model="tiny-llama", messages=ask, max_tokens=900, stream=True) as stream:
        next(iter(stream))
        with pytest.raises(openai.RateLimitError) as waiting:
            client.chat.completions.create(model="tiny-llama", messages=ask, max_tokens=500)
    assert int(waiting.value.response.headers["retry-after"]) >= 1
    assert error_of(waiting.value.response)["type"] == "tokens"


def test_buckets_refill_continuously_and_settle_to_real_usage():
    from openft.api.rate_limits import RateLimiter

    now = [0.0]
    limiter = RateLimiter(requests_per_minute=2, tokens_per_minute=600, clock=lambda: now[0])
    limiter.admit_request("k")
    limiter.admit_request("k")
    with pytest.raises(Exception) as caught:
        limiter.admit_request("k")
    assert caught.value.status == 429 and caught.value.headers["retry-after"] == "30"
    now[0] += 30  # one request refilled
    limiter.admit_request("k")
    reserved = limiter.reserve_tokens("k", 500)
    limiter.settle_tokens("k", reserved, 100)  # only 100 used: 400 come back
    assert limiter.headers("k")["x-ratelimit-remaining-tokens"] == "500"


def test_lone_surrogates_are_found_with_their_path():
    from openft.api.request_guard import lone_surrogate_path

    assert lone_surrogate_path({"a": [{"b": "ok"}, {"c": "x\ud800"}]}) == "a[1].c"
    assert lone_surrogate_path({"a": "\U0001f642"}) is None
    deep = "fine"
    for _ in range(5000):
        deep = [deep]
    assert lone_surrogate_path({"deep": deep}) is None  # iterative: no recursion limit

"""Heavy single requests no longer stall the server: /health is timed while a 5 MB prompt is tokenized and
while a file with a 10 MB line validates, and each heavy request finishes in bounded time."""

from __future__ import annotations

import io
import json
import socket
import time

import httpx
import psutil
import pytest

from tests.api.hostile_helpers import (
    HealthProbe,
    auth,
    error_of,
    health_budget,
    idle_health_p95,
    root_url,
    start_hostile_server,
)
from tests.fixtures.server import stop_server

MB = 1024 * 1024
# The bound is on the 95th percentile. A single probe can still wait while the tokenizer converts millions of
# ids into Python lists, which holds the GIL (~0.4 s for 5 MB on an idle machine); no probe may wait anywhere
# near as long as the heavy work itself, which the old event-loop stall did (the whole 5-50 s).
WORST_PROBE_S = 5.0
WORST_VALIDATION_PROBE_S = 1.0  # scheduling noise on a busy 2-core machine; a GIL pause was 5 s and more


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    # A budget above the 300 s the 10 MB line is given below, so a slow machine fails on time, not on the budget.
    live = start_hostile_server(tmp_path_factory.mktemp("hostile-load"), tiny_model_dir,
                                {"OPENFT_VALIDATION_TIMEOUT_SECONDS": "400"})
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def key(server):
    return server.create_key("load-org")


def _assert_health_stayed_fast(probe: HealthProbe, idle_p95: float) -> None:
    budget = health_budget(idle_p95)
    assert not probe.failures, probe.failures
    assert len(probe.latencies) >= 5, probe.summary()
    assert probe.p95() < budget, f"{probe.summary()}; budget {budget * 1000:.0f} ms (idle p95 {idle_p95 * 1000:.0f} ms)"
    assert max(probe.latencies) < WORST_PROBE_S, probe.summary()


def test_health_answers_while_a_5mb_prompt_is_tokenized(server, key):
    prompt = ("lorem ipsum dolor sit amet " * (5 * MB // 27 + 1))[: 5 * MB]
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": prompt}], "max_tokens": 1}
    # load the engine first, so the probe window covers tokenizing rather than model loading
    warm = httpx.post(server.base_url + "/chat/completions", headers=auth(key), timeout=120,
                      json={"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1})
    assert warm.status_code == 200, warm.text
    idle = idle_health_p95(root_url(server))
    with HealthProbe(root_url(server)) as probe:
        started = time.monotonic()
        response = httpx.post(server.base_url + "/chat/completions", headers=auth(key), json=body, timeout=120)
        elapsed = time.monotonic() - started
    assert response.status_code == 400  # far beyond the tiny model's 2,048-token context
    assert "prompt" in error_of(response)["message"]
    print(f"5 MB prompt answered in {elapsed:.1f} s; /health idle p95 {idle * 1000:.0f} ms, {probe.summary()}")
    _assert_health_stayed_fast(probe, idle)


def _file_with_a_10mb_line() -> bytes:
    small = [{"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
             for i in range(10)]
    word = "a" * (10 * MB)  # one unbroken word: the worst case for BPE merging
    big = {"messages": [{"role": "user", "content": word}, {"role": "assistant", "content": "ok"}]}
    return "\n".join(json.dumps(row) for row in [big, *small]).encode() + b"\n"


def _validation_workers(server) -> list[psutil.Process]:
    children = psutil.Process(server.process.pid).children()
    return [p for p in children if "openft.data.validation_worker" in " ".join(p.cmdline())]


def test_health_answers_while_a_10mb_line_validates(server, key):
    data = _file_with_a_10mb_line()
    client = server.client(key, timeout=600)
    idle = idle_health_p95(root_url(server))
    with HealthProbe(root_url(server)) as probe:
        started = time.monotonic()
        created = client.files.create(file=("big.jsonl", io.BytesIO(data)), purpose="fine-tune")
        elapsed = time.monotonic() - started
    report = httpx.get(f"{server.base_url}/files/{created.id}/validation", headers=auth(key)).json()
    print(f"10 MB line validated in {elapsed:.1f} s; /health idle p95 {idle * 1000:.0f} ms, {probe.summary()}")
    assert created.status == "processed", created.status_details
    assert report["openai_tokens"]["cl100k_base"]["total_tokens"] > 1_000_000  # the long line was counted
    # Was: never finished (pure-Python BPE, quadratic in the word). Now the budget bounds it, and the elapsed time
    # also covers starting the server's first validation worker; see docs/request_limits.md.
    assert elapsed < 450
    budget = health_budget(idle)
    assert not probe.failures, probe.failures
    assert probe.p95() < budget, f"{probe.summary()}; budget {budget * 1000:.0f} ms"
    # Validation runs in a worker process, so no GIL-holding step (a regex over the 10 MB string, json.loads)
    # can pause the server: no probe waits anywhere near the seconds those steps take.
    assert max(probe.latencies) < WORST_VALIDATION_PROBE_S, probe.summary()


def test_an_upload_whose_client_disconnects_stops_its_validation(server, key):
    """The worker validating an upload is killed once its client goes away, and nothing is stored."""
    workers = _validation_workers(server)
    assert len(workers) == 1, workers  # kept warm by the test above
    worker = workers[0]
    busy_from = sum(worker.cpu_times()[:2])
    boundary = "openftboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nfine-tune\r\n"
            f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"gone.jsonl\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + _file_with_a_10mb_line()
    body += f"\r\n--{boundary}--\r\n".encode()
    head = (f"POST /v1/files HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: multipart/form-data; boundary={boundary}\r\nContent-Length: {len(body)}\r\n\r\n")
    url = httpx.URL(server.base_url)
    with socket.create_connection((url.host, url.port)) as connection:
        connection.sendall(head.encode() + body)
        deadline = time.monotonic() + 120
        while sum(worker.cpu_times()[:2]) - busy_from < 0.5:  # the worker has started on the file
            assert time.monotonic() < deadline, "validation never started"
            time.sleep(0.1)
    gone_at = time.monotonic()
    psutil.wait_procs([worker], timeout=10)
    assert not worker.is_running(), "the worker kept validating for a client that left"
    print(f"worker stopped {time.monotonic() - gone_at:.2f} s after the client disconnected")
    listed = httpx.get(f"{server.base_url}/files", headers=auth(key)).json()["data"]
    assert "gone.jsonl" not in [f["filename"] for f in listed]

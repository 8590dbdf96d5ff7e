"""`x-request-id` on every response, and the same id in uvicorn's access-log line."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient
from uvicorn.logging import AccessFormatter

from openft.api.app import create_app
from openft.api.request_id import REQUEST_ID_PATTERN, RequestIdLogFilter, current_request_id


def test_every_response_gets_its_own_request_id_even_before_a_route_runs(openft_home):
    with TestClient(create_app(prepare=False, embedded_worker=False)) as client:
        health = client.get("/health")
        unauthenticated = client.get("/v1/models")  # refused by the request guard, before any route
        unknown = client.get("/nowhere", headers={"X-Client-Request-Id": "mine-1"})
    ids = [r.headers.get("x-request-id") for r in (health, unauthenticated, unknown)]
    assert unauthenticated.status_code == 401
    assert all(i and REQUEST_ID_PATTERN.match(i) for i in ids) and len(set(ids)) == 3


def test_access_log_line_carries_the_request_and_client_ids():
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:5000", "GET", "/v1/models", "1.1", 200), None)
    token = current_request_id.set("req_" + "a" * 32)
    try:
        assert RequestIdLogFilter().filter(record)
    finally:
        current_request_id.reset(token)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s', use_colors=False).format(record)
    assert f"request_id=req_{'a' * 32}" in line and '"GET /v1/models HTTP/1.1" 200' in line

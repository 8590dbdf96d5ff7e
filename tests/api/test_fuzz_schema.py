"""Schema fuzzing: schemathesis generates requests for every route of openft's own /openapi.json and sends them
to a live server with a valid key. The run is bounded (a fixed number of examples per route and a time cap) and
must end with zero 5xx answers, while /health stays fast throughout.

OPENFT_FUZZ_EXAMPLES (default 6) and OPENFT_FUZZ_BUDGET_S (default 90) size the run.
"""

from __future__ import annotations

import os
import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings

from tests.api.hostile_helpers import HealthProbe, auth, health_budget, idle_health_p95, root_url, start_hostile_server
from tests.fixtures.server import stop_server

EXAMPLES_PER_ROUTE = int(os.environ.get("OPENFT_FUZZ_EXAMPLES", "6"))
BUDGET_S = float(os.environ.get("OPENFT_FUZZ_BUDGET_S", "90"))
# Generation is bounded too: a fuzzed chat request may ask for up to this many tokens from the tiny model.
MAX_GENERATED_TOKENS = 2


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    live = start_hostile_server(tmp_path_factory.mktemp("fuzz"), tiny_model_dir)
    yield live
    stop_server(live)


def _bounded(case) -> None:
    """Keep fuzzed generation requests cheap without changing what is being validated."""
    body = case.body
    if isinstance(body, dict):
        for name in ("max_tokens", "max_completion_tokens"):
            if isinstance(body.get(name), int) and not isinstance(body.get(name), bool):
                body[name] = min(body[name], MAX_GENERATED_TOKENS) if body[name] > 0 else body[name]
        if isinstance(body.get("n"), int) and not isinstance(body.get("n"), bool) and body["n"] > 2:
            body["n"] = 2
        if "max_tokens" not in body and "messages" in body:
            body["max_tokens"] = MAX_GENERATED_TOKENS


def test_no_route_answers_5xx_to_fuzzed_requests(server):
    url = root_url(server)
    key = server.create_key("fuzz-org")
    schema = schemathesis.openapi.from_url(url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25  # every /v1 route is in the schema
    server_errors: list[str] = []
    sent = {"requests": 0}
    deadline = time.monotonic() + BUDGET_S
    idle = idle_health_p95(url)

    with HealthProbe(url, interval=0.2) as probe:
        for operation in operations:
            if time.monotonic() > deadline:
                break

            @settings(max_examples=EXAMPLES_PER_ROUTE, deadline=None, database=None, derandomize=True,
                      phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
            @given(case=operation.as_strategy())
            def send(case) -> None:
                if time.monotonic() > deadline:
                    return
                _bounded(case)
                response = case.call(base_url=url, headers=auth(key), timeout=60)
                sent["requests"] += 1
                if response.status_code >= 500:
                    server_errors.append(f"{case.method} {case.path} -> {response.status_code}: "
                                         f"{response.text[:200]} (body {str(case.body)[:200]})")

            send()
    print(f"fuzzing: {sent['requests']} requests over {len(operations)} operations; /health {probe.summary()}")
    assert not server_errors, "\n".join(server_errors[:20])
    assert sent["requests"] >= len(operations)  # the time cap still left every route its examples
    assert httpx.get(url + "/health").status_code == 200
    assert not probe.failures, probe.failures
    assert probe.p95() < health_budget(idle), probe.summary()

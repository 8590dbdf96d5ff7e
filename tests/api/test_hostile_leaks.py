"""What one user could see of another, or of the server, and work that outlived its client."""

from __future__ import annotations

import logging
import re
import time

import httpx
import pytest
import torch
from peft import LoraConfig, get_peft_model
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from transformers import AutoModelForCausalLM

from openft.api.access_log import RedactQueryFilter, redact_query
from openft.api.evals import json_safe
from openft.store.tables import FineTunedModel, Organization
from tests.api.hostile_helpers import auth, root_url, start_hostile_server
from tests.fixtures.server import stop_server

OWN = "ft:tiny-llama:owner-org::a0000001"
FOREIGN = "ft:tiny-llama:other-org::b0000002"


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    live = start_hostile_server(tmp_path_factory.mktemp("hostile-leaks"), tiny_model_dir)
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def keys(server, tiny_model_dir, tmp_path_factory):
    """Two organizations, each with one LoRA fine-tune whose folder names its job."""
    keys = {org: server.create_key(org) for org in ("owner-org", "other-org")}
    root = tmp_path_factory.mktemp("leak-adapters")
    engine = create_engine(server.env.get("OPENFT_DATABASE_URL") or f"sqlite:///{server.home / 'openft.db'}")
    with Session(engine) as session:
        for index, (org_name, name) in enumerate([("owner-org", OWN), ("other-org", FOREIGN)]):
            org = session.scalar(select(Organization).where(Organization.name == org_name))
            torch.manual_seed(index)
            model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                   LoraConfig(r=4, target_modules="all-linear"))
            folder = root / f"ftjob-secret{index}" / "adapter"
            model.save_pretrained(folder)
            session.add(FineTunedModel(id=name, organization_id=org.id, base_model="tiny-llama",
                                       job_id=f"ftjob-secret{index}", created_at=int(time.time()),
                                       path=str(folder), kind="lora"))
        session.commit()
    engine.dispose()
    return keys


def _ask(server, key: str, model: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, **extra}
    return httpx.post(server.base_url + "/chat/completions", headers=auth(key), json=body, timeout=120)


def test_serving_stats_show_only_the_callers_adapters(server, keys):
    assert _ask(server, keys["owner-org"], OWN).status_code == 200
    assert _ask(server, keys["other-org"], FOREIGN).status_code == 200
    for org, own_job, foreign_job in [("owner-org", "ftjob-secret0", "ftjob-secret1"),
                                      ("other-org", "ftjob-secret1", "ftjob-secret0")]:
        stats = httpx.get(server.base_url + "/serving/stats", headers=auth(keys[org])).json()
        text = str(stats)
        assert own_job in text and foreign_job not in text, (org, stats)
        assert stats["engines"]["base:tiny-llama"]["requests_finished"] >= 2  # shared counters stay


def test_non_streaming_request_is_cancelled_when_its_client_goes(server, keys):
    key = keys["owner-org"]
    # Greedy: the tiny model then never ends on its own (sampled, it could stop early and answer in time). 1900
    # tokens took it 1.4 s on the 2-core CI machine (its decode steps got faster over time: a 1.5 s patience
    # once saw the answer finish first), so the client waits 0.4 s.
    body = {"model": "tiny-llama", "messages": [{"role": "user", "content": "go"}], "max_tokens": 1900,
            "temperature": 0, "stop": None}
    warm = {**body, "max_tokens": 1}  # the engine loaded first, so the client's patience is all decoding
    warmed = httpx.post(server.base_url + "/chat/completions", headers=auth(key), json=warm, timeout=60)
    assert warmed.status_code == 200
    before = httpx.get(server.base_url + "/serving/stats", headers=auth(key)).json()["engines"]["base:tiny-llama"]
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(server.base_url + "/chat/completions", headers=auth(key), json=body, timeout=0.4)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = httpx.get(server.base_url + "/serving/stats", headers=auth(key)).json()["engines"]["base:tiny-llama"]
        if stats["requests_cancelled"] > before["requests_cancelled"] and stats["running"] == 0:
            break
        time.sleep(0.2)
    assert stats["requests_cancelled"] == before["requests_cancelled"] + 1, stats
    assert stats["running"] == 0
    generated = stats["generated_tokens"]
    time.sleep(1.0)
    after = httpx.get(server.base_url + "/serving/stats", headers=auth(key)).json()["engines"]["base:tiny-llama"]
    assert after["generated_tokens"] == generated  # nothing kept generating for the departed client


def test_access_log_redacts_secret_query_parameters(server, keys):
    httpx.get(server.base_url + "/models?api_key=sk-leaky-123&limit=2&token=tok-leaky", headers=auth(keys["owner-org"]))
    assert redact_query("/v1/models?api_key=sk-1&limit=2") == "/v1/models?api_key=REDACTED&limit=2"
    assert redact_query("/v1/x?Authorization=Bearer%20sk&secret_thing=1&after=file-1") == (
        "/v1/x?Authorization=REDACTED&secret_thing=REDACTED&after=file-1")
    record = logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                               ("127.0.0.1:1", "GET", "/v1/models?key=sk-abc", "1.1", 200), None)
    RedactQueryFilter().filter(record)
    assert "sk-abc" not in record.getMessage() and "key=REDACTED" in record.getMessage()


def test_access_log_of_a_real_server_holds_no_query_secret(tmp_path, tiny_model_dir):
    live = start_hostile_server(tmp_path, tiny_model_dir, {"OPENFT_EMBEDDED_WORKER": "0"}, log_level="info")
    try:
        key = live.create_key("log-org")
        httpx.get(live.base_url + "/models?api_key=sk-should-not-appear&limit=3", headers=auth(key))
    finally:
        stop_server(live)
    log = (tmp_path / "server.log").read_text()
    assert "/v1/models?api_key=REDACTED&limit=3" in log  # the access line is written, without the secret
    assert "sk-should-not-appear" not in log


def test_docs_load_without_any_cdn(server):
    page = httpx.get(root_url(server) + "/docs")
    assert page.status_code == 200
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources  # nothing from another host
    for source in sources:
        assert httpx.get(root_url(server) + source).status_code == 200, source
    schema = httpx.get(root_url(server) + "/openapi.json").json()
    assert schema["openapi"].startswith("3.") and "/v1/chat/completions" in schema["paths"]


def test_advice_numbers_that_are_not_finite_become_null():
    assert json_safe({"months": float("inf"), "ratio": float("nan"), "rows": [1.5, float("-inf")]}) == {
        "months": None, "ratio": None, "rows": [1.5, None]}

"""Evaluation endpoints cannot point the worker inward (SSRF), and a judge must be a model the caller may use:
both are refused when the run is created, with a 400 naming the parameter (issue 14)."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest

from openft.store.accounts import get_or_create_organization
from openft.store.db import dispose_engines, session_scope
from openft.store.tables import FineTunedModel
from tests.evals.fakes import HELD_OUT, SYSTEM


@pytest.fixture(scope="module")
def api(live_server):
    key = live_server.create_key("ssrf-org")
    with httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def eval_file(live_server, api):
    rows = [{"messages": [SYSTEM, {"role": "user", "content": t}, {"role": "assistant", "content": a}]}
            for t, a in HELD_OUT]
    data = "\n".join(json.dumps(r) for r in rows).encode()
    return live_server.client(api.headers["Authorization"][7:]).files.create(
        file=("held_out.jsonl", io.BytesIO(data)), purpose="evals").id


def create(api, eval_file, **fields) -> httpx.Response:
    return api.post("/evaluations", json={"eval_file": eval_file, "model": "tiny-llama", "max_examples": 1,
                                          "max_tokens": 1, **fields})


@pytest.mark.parametrize(
    ("field", "url"),
    [
        ("external", "http://127.0.0.1:8000/v1"),
        ("external", "http://localhost:11434/v1"),
        ("external", "http://169.254.169.254/latest/meta-data"),
        ("judge", "http://10.0.0.7/v1"),
        ("judge", "http://[::1]:8080/v1"),
        ("external", "file:///etc/passwd"),
    ],
)
def test_inward_endpoints_are_refused_naming_the_parameter(api, eval_file, field, url):
    endpoint = {"base_url": url, "api_key": "sk-x", "model": "m"}
    answer = create(api, eval_file, **{field: endpoint}, **({"metrics": ["llm_judge"]} if field == "judge" else {}))
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["param"] == f"{field}.base_url" and error["code"] == "url_not_allowed"
    assert answer.headers["x-should-retry"] == "false"


def _database_url(live_server) -> str:
    return live_server.env.get("OPENFT_DATABASE_URL") or f"sqlite:///{live_server.home / 'openft.db'}"


def _add_model(live_server, org_name: str, name: str) -> None:
    with session_scope(_database_url(live_server)) as session:
        org = get_or_create_organization(session, org_name)
        session.add(FineTunedModel(id=name, organization_id=org.id, base_model="tiny-llama", job_id="ftjob-x",
                                   created_at=int(time.time()), path="/nonexistent", kind="lora"))
    dispose_engines()


def test_a_judge_must_be_a_model_of_the_caller(live_server, api, eval_file):
    theirs = "ft:tiny-llama:other-org::ftjob-theirs"
    ours = "ft:tiny-llama:ssrf-org::ftjob-ours"
    _add_model(live_server, "other-org", theirs)
    _add_model(live_server, "ssrf-org", ours)

    for name in (theirs, "no-such-model"):
        answer = create(api, eval_file, judge={"model": name})
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == "judge.model"
        assert answer.json()["error"]["code"] == "model_not_found"

    for name in (ours, "tiny-llama"):
        answer = create(api, eval_file, judge={"model": name})
        assert answer.status_code == 200, answer.text
        api.post(f"/evaluations/{answer.json()['id']}/cancel")

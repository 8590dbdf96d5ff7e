"""The evaluations API through a real `openft serve`: the embedded worker runs the eval on the tiny model."""

from __future__ import annotations

import io
import json
import time

import httpx
import pytest

from tests.evals.fakes import HELD_OUT, SYSTEM, TRAIN


def jsonl(pairs) -> bytes:
    rows = [
        {"messages": [SYSTEM, {"role": "user", "content": t}, {"role": "assistant", "content": a}]} for t, a in pairs
    ]
    return "\n".join(json.dumps(r) for r in rows).encode() + b"\n"


@pytest.fixture(scope="module")
def key(live_server):
    return live_server.create_key("eval-org")


@pytest.fixture(scope="module")
def api(live_server, key):
    with httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def files(live_server, key):
    client = live_server.client(key)
    held_out = client.files.create(file=("held_out.jsonl", io.BytesIO(jsonl(HELD_OUT))), purpose="evals").id
    train = client.files.create(file=("train.jsonl", io.BytesIO(jsonl(TRAIN))), purpose="evals").id
    return held_out, train


def wait(api, run_id: str, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/evaluations/{run_id}").json()
        if run["status"] in ("succeeded", "failed", "cancelled"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"evaluation {run_id} still {run['status']} after {timeout} s")


@pytest.fixture(scope="module")
def finished(api, files):
    held_out, train = files
    body = {"eval_file": held_out, "training_file": train, "model": "tiny-llama", "k": 2, "max_tokens": 4,
            "metadata": {"team": "search"}}  # fmt: skip
    created = api.post("/evaluations", json=body)
    assert created.status_code == 200, created.text
    run = created.json()
    assert run["object"] == "evaluation" and run["status"] == "queued" and run["id"].startswith("eval-")
    assert run["strategies"] == ["zero-shot", "few-shot", "retrieval-few-shot"]  # defaults for the inputs given
    return wait(api, run["id"])


def test_an_evaluation_runs_on_the_worker_and_stores_its_results(finished):
    assert finished["status"] == "succeeded", finished["error"]
    assert finished["progress"] == {"completed": 12, "total": 12}
    assert finished["started_at"] >= finished["created_at"] and finished["finished_at"] >= finished["started_at"]
    summary = finished["summary"]
    assert sorted(summary["ranking"]) == ["few-shot", "retrieval-few-shot", "zero-shot"]
    tokens = {s["name"]: s["mean_prompt_tokens"] for s in summary["strategies"]}
    assert tokens["few-shot"] > tokens["zero-shot"] > 0  # counted by the engine's tokenizer
    assert all(s["latency_p95_s"] >= s["latency_p50_s"] > 0 for s in summary["strategies"])
    assert finished["metadata"] == {"team": "search"}


def test_reports_in_every_format_and_advice(api, finished):
    run_id = finished["id"]
    md = api.get(f"/evaluations/{run_id}/report", params={"format": "md", "requests_per_day": 500})
    assert md.status_code == 200 and md.headers["content-type"].startswith("text/markdown")
    assert "500 requests/day" in md.text and "## Strategies (best first)" in md.text
    html = api.get(f"/evaluations/{run_id}/report", params={"format": "html"})
    assert html.headers["content-type"].startswith("text/html") and html.text.count('<svg class="plot"') == 3
    report = api.get(f"/evaluations/{run_id}/report").json()
    assert report["results"]["ranking"] == finished["summary"]["ranking"]
    advice = api.post(f"/evaluations/{run_id}/advice", json={"requests_per_day": 10_000, "device": "gpu"}).json()
    assert advice["object"] == "evaluation.advice" and advice["inputs"]["device"] == "gpu"
    assert advice["recommendations"]["local"]["headline"]


def test_list_and_cancel(api, files, finished):
    listed = api.get("/evaluations").json()
    assert finished["id"] in [r["id"] for r in listed["data"]]
    refused = api.post(f"/evaluations/{finished['id']}/cancel")
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "evaluation_id"


def test_another_organization_sees_nothing(live_server, finished, files):
    other = live_server.create_key("other-org")
    with httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {other}"}) as api:
        for method, path in [("GET", ""), ("GET", "/report"), ("POST", "/cancel"), ("POST", "/advice")]:
            response = api.request(method, f"/evaluations/{finished['id']}{path}")
            assert response.status_code == 404, path
            assert response.json()["error"]["param"] == "evaluation_id"
        assert api.get("/evaluations").json()["data"] == []
        # nor can it evaluate on the first organization's files
        response = api.post("/evaluations", json={"eval_file": files[0], "model": "tiny-llama"})
        assert response.status_code == 404 or response.json()["error"]["param"] == "eval_file"


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": None}, "model"),
        ({"model": "no-such-model"}, "model"),
        ({"eval_file": "file-missing"}, "eval_file"),
        ({"strategies": ["zero-shot", "many-shot"]}, "strategies[1]"),
        ({"strategies": ["few-shot"]}, "training_file"),
        ({"strategies": ["fine-tuned"]}, "fine_tuned_models"),
        ({"fine_tuned_models": ["ft:tiny-llama:other::deadbeef"]}, "fine_tuned_models[0]"),
        ({"metrics": ["bleu"]}, "metrics[0]"),
        ({"metrics": ["llm_judge"]}, "judge"),
        ({"k": -1}, "k"),
        ({"external": {"base_url": "http://x"}}, "external.api_key"),
        ({"temperature": 0.5}, "temperature"),
    ],
)
def test_bad_parameters_are_named(api, files, change, param):
    body = {"eval_file": files[0], "model": "tiny-llama", **change}
    response = api.post("/evaluations", json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["message"]


def test_bad_report_requests(api, finished):
    response = api.get(f"/evaluations/{finished['id']}/report", params={"format": "pdf"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "format"
    response = api.post(f"/evaluations/{finished['id']}/advice", json={"requests_per_day": -5})
    assert response.status_code == 400 and response.json()["error"]["param"] == "requests_per_day"

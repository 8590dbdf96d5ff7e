"""Distillation end to end: a live openft server distils through a flaky loopback proxy in front of an openft
teacher (the same server's OpenAI-compatible endpoint, called with another organization's key). The proxy fails
a share of requests on purpose (429 with retry-after, 500, 503, a hang past the request timeout); the job retries,
loses nothing, writes a training file that validates, and a rerun makes zero teacher calls. A worker crash
(the whole server SIGKILLed mid-job) resumes without paying twice for any prompt.
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from tests.fixtures.server import free_port, register_model, start_server, stop_server

ALLOW = {"OPENFT_VALIDATION_MODEL": "tiny-llama", "OPENFT_OUTBOUND_ALLOW": "127.0.0.1",
         "OPENFT_WORKER_STALE_SECONDS": "6"}  # fmt: skip
TIMEOUT_S = 4.0  # the distillations' request_timeout; the proxy hangs one request longer than this


class FlakyTeacher:
    """An OpenAI-compatible proxy that fails some attempts of each prompt on purpose, then forwards to the real
    teacher. Prompt i (from "Question i") fails its first attempt with 429 (i % 3 == 0), 500 (i % 3 == 1) or not
    at all (i % 3 == 2); prompts with i % 4 == 0 also get a 503 on their second attempt; prompt 5's first attempt
    hangs past the client's timeout. `forwarded` counts the calls that reached (and were paid at) the teacher.
    After `hold_after` forwarded answers, every request is held until `held` is cleared, then answered 503
    without reaching the teacher (a worker that died meanwhile never gets those answers)."""

    def __init__(self) -> None:
        self.target = ""
        self.attempts: dict[str, int] = {}
        self.forwarded: dict[str, int] = {}
        self.held = threading.Event()  # set: hold every request (then answer 503 without forwarding)
        self.hold_after: int | None = None
        self.app = FastAPI()
        self.app.post("/v1/chat/completions")(self.chat)

    @property
    def total_forwarded(self) -> int:
        return sum(self.forwarded.values())

    @property
    def total_requests(self) -> int:
        return sum(self.attempts.values())

    async def chat(self, request: Request) -> Response:
        body = await request.body()
        text = json.loads(body)["messages"][-1]["content"]
        attempt = self.attempts[text] = self.attempts.get(text, 0) + 1
        while self.held.is_set():
            await asyncio.sleep(0.05)
            if not self.held.is_set():
                return JSONResponse({"error": {"message": "held", "type": "server_error"}}, status_code=503)
        number = int(text.rsplit(" ", 1)[-1]) if text.rsplit(" ", 1)[-1].isdigit() else 2
        error = {"error": {"message": "injected", "type": "server_error", "param": None, "code": None}}
        if attempt == 1 and number == 5:
            await asyncio.sleep(TIMEOUT_S + 0.5)  # past the client's request_timeout
            return JSONResponse(error, status_code=504)
        if attempt == 1 and number % 3 == 0:
            return JSONResponse(error, status_code=429, headers={"retry-after": "0.2"})
        if attempt == 1 and number % 3 == 1:
            return JSONResponse(error, status_code=500)
        if attempt == 2 and number % 4 == 0:
            return JSONResponse(error, status_code=503, headers={"retry-after-ms": "100"})
        async with httpx.AsyncClient(timeout=120) as client:
            answer = await client.post(self.target + "/chat/completions", content=body,
                                       headers={"authorization": request.headers["authorization"],
                                                "content-type": "application/json"})  # fmt: skip
        self.forwarded[text] = self.forwarded.get(text, 0) + 1
        if self.hold_after is not None and self.total_forwarded >= self.hold_after:
            self.held.set()
        return Response(answer.content, status_code=answer.status_code, media_type="application/json")


@pytest.fixture(scope="module")
def proxy():
    flaky = FlakyTeacher()
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(flaky.app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    flaky.url = f"http://127.0.0.1:{port}/v1"
    yield flaky
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def home(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("openft-distill")
    register_model(home, "tiny-llama", tiny_model_dir)
    return home


@pytest.fixture(scope="module")
def live(home, proxy):
    server = start_server(home, ALLOW)
    proxy.target = server.base_url
    state = {"server": server}
    yield state
    stop_server(state["server"])


@pytest.fixture(scope="module")
def keys(live):
    server = live["server"]
    keys = {"student": server.create_key("student"), "teacher": server.create_key("teacher")}
    # Load the teacher's model once, so that no distillation request times out waiting for it.
    warm = api(live, keys["teacher"]).post("/chat/completions", json={
        "model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
    assert warm.status_code == 200, warm.text
    return keys


def api(live, key) -> httpx.Client:
    return httpx.Client(base_url=live["server"].base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)


def prompts(tag: str, n: int) -> bytes:
    lines = [{"messages": [{"role": "system", "content": "Answer briefly."},
                           {"role": "user", "content": f"{tag} Question {i}"}], "keep": "yes" if i % 2 else "no"}
             for i in range(n)]  # fmt: skip
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def upload(client: httpx.Client, content: bytes, name: str = "prompts.jsonl", purpose: str = "user_data") -> str:
    response = client.post("/files", files={"file": (name, io.BytesIO(content))}, data={"purpose": purpose})
    assert response.status_code == 200, response.text
    return response.json()["id"]


def remote_request(proxy, keys, file_id: str, **extra) -> dict:
    return {"input_file": file_id, "max_completion_tokens": 4, "temperature": 1, "seed": 7, "concurrency": 4,
            "request_timeout": TIMEOUT_S, "max_attempts": 6, "filter": {"drop_truncated": False},
            "teacher": {"model": "tiny-llama", "base_url": proxy.url, "api_key": keys["teacher"],
                        "price_model": "gpt-4o-mini"}, **extra}  # fmt: skip


def wait_done(client: httpx.Client, distillation_id: str, timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/distillations/{distillation_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.3)
    raise AssertionError(f"distillation did not finish: {job}")


def test_a_flaky_teacher_loses_nothing_and_a_rerun_pays_nothing(live, proxy, keys):
    client = api(live, keys["student"])
    file_id = upload(client, prompts("flaky", 12))
    created = client.post("/distillations", json=remote_request(proxy, keys, file_id))
    assert created.status_code == 201, created.text
    assert created.json()["teacher"]["api_key"] == "***"  # never sent back
    job = wait_done(client, created.json()["id"])
    assert job["status"] == "succeeded", job["error"]
    usage, result = job["usage"], job["result"]
    assert result == {"prompts": 12, "kept": 12, "dropped": 0, "failed": 0, "dropped_by_reason": {}}
    assert usage["answers_paid"] == 12 and usage["answers_from_cache"] == 0
    assert usage["retries"] >= 9 and {"429", "500", "503", "timeout"} <= set(usage["failures_by_status"])
    assert usage["prompt_tokens"] > 0 and usage["cost_usd"] > 0 and usage["price"]["model"] == "gpt-4o-mini"
    assert set(proxy.forwarded) == {f"flaky Question {i}" for i in range(12)}  # every prompt reached the teacher

    output = client.get(f"/files/{job['output_file']}").json()
    assert output["purpose"] == "fine-tune" and output["status"] == "processed"
    lines = [json.loads(x) for x in client.get(f"/files/{job['output_file']}/content").text.splitlines()]
    assert [x["messages"][1]["content"] for x in lines] == [f"flaky Question {i}" for i in range(12)]
    assert all(x["messages"][-1]["role"] == "assistant" and x["messages"][-1]["content"] for x in lines)
    assert all("keep" not in x for x in lines)  # grader-only fields stay out of the training data
    ready = client.post("/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": job["output_file"]})
    assert ready.status_code == 200, ready.text  # ready for a fine-tuning job as it is
    client.post(f"/fine_tuning/jobs/{ready.json()['id']}/cancel")

    calls_before = proxy.total_requests
    rerun = wait_done(client, client.post("/distillations", json=remote_request(proxy, keys, file_id)).json()["id"])
    assert rerun["status"] == "succeeded"
    assert proxy.total_requests == calls_before  # zero teacher calls
    assert rerun["usage"]["answers_paid"] == 0 and rerun["usage"]["answers_from_cache"] == 12
    assert rerun["usage"]["teacher_requests"] == 0 and rerun["usage"]["cost_usd"] == 0

    listed = client.get("/distillations").json()
    assert [d["id"] for d in listed["data"][:2]] == [rerun["id"], job["id"]]
    first = client.get("/distillations", params={"limit": 1}).json()  # cursor pages, as the SDK drives them
    assert first["data"][0]["id"] == first["first_id"] == first["last_id"] == rerun["id"] and first["has_more"]
    second = client.get("/distillations", params={"limit": 1, "after": rerun["id"]}).json()
    assert [d["id"] for d in second["data"]] == [job["id"]]
    unknown = client.get("/distillations", params={"after": "distill-nope"})
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "after"
    other = api(live, keys["teacher"])
    assert other.get(f"/distillations/{job['id']}").status_code == 404  # another organization sees nothing
    again = client.post(f"/distillations/{job['id']}/cancel")
    assert again.status_code == 400 and again.json()["error"]["param"] == "distillation_id"


def test_the_cli_distils_from_a_served_teacher_with_a_grader_filter(live, keys, tmp_path):
    """`openft distill check` / `create --wait` / `get` / `list` against a model openft serves, with a grader that
    keeps only the prompt lines marked keep=yes; the report names each dropped line and why."""
    from typer.testing import CliRunner

    from openft.cli import app

    env = {"OPENFT_BASE_URL": live["server"].base_url, "OPENFT_API_KEY": keys["student"], "COLUMNS": "200"}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "assistant", "content": "a"}]}) + "\n")
    checked = CliRunner().invoke(app, ["distill", "check", str(bad)], env=env)
    assert checked.exit_code == 1 and "line 1, messages[0]" in checked.output
    good = tmp_path / "good.jsonl"
    good.write_bytes(prompts("local", 20))  # a training file needs at least 10 examples
    grader = {"type": "string_check", "name": "keep", "input": "{{item.keep}}", "reference": "yes",
              "operation": "eq"}  # fmt: skip
    created = CliRunner().invoke(app, [
        "distill", "create", "--prompts", str(good), "--teacher-model", "tiny-llama", "--max-completion-tokens", "4",
        "--temperature", "1", "--seed", "7", "--filter", json.dumps({"drop_truncated": False, "grader": grader}),
        "--wait"], env=env)  # fmt: skip
    assert created.exit_code == 0, created.output
    assert "kept 10 of 20; dropped 10 (grader 10)" in created.output and "training file: file-" in created.output
    job_id = created.stdout.split()[0]
    job = json.loads(CliRunner().invoke(app, ["distill", "get", job_id, "--json"], env=env).stdout)
    assert job["status"] == "succeeded" and job["result"]["kept"] == 10
    assert job["usage"]["cost_usd"] is None and "served by openft" in job["usage"]["price_note"]
    assert job_id in CliRunner().invoke(app, ["distill", "list"], env=env).output
    report = api(live, keys["student"]).get(f"/distillations/{job_id}/report").json()
    assert report["kept_lines"] == list(range(2, 21, 2))
    assert [d["line"] for d in report["dropped_lines"]] == list(range(1, 20, 2))
    assert "scored 0 < pass_threshold 1" in report["dropped_lines"][0]["reason"]


@pytest.mark.parametrize("change, param, words", [
    ({"teacher": None}, "teacher", "Missing required"),
    ({"teacher": {"model": "x", "base_url": "http://10.1.2.3/v1"}}, "teacher.base_url", "private"),
    ({"teacher": {"model": "no-such-model"}}, "teacher.model", "does not exist"),
    ({"teacher": {"model": "tiny-llama", "price_model": "no-such-price"}}, "teacher.price_model", "price"),
    ({"temperature": 3}, "temperature", "at most 2"),
    ({"concurrency": 0}, "concurrency", "at least 1"),
    ({"filter": {"must_match": "("}}, "filter.must_match", "regular expression"),
    ({"filter": {"grader": {"type": "string_check", "name": "g"}}}, "filter.grader.input", "Missing"),
    ({"filter": {"pass_threshold": 0.5}}, "filter.pass_threshold", "needs 'filter.grader'"),
    ({"colour": "blue"}, "colour", "Unrecognized"),
])  # fmt: skip
def test_bad_requests_are_400s_naming_the_parameter(live, keys, change, param, words):
    client = api(live, keys["student"])
    file_id = upload(client, prompts("bad", 2))
    body = {"input_file": file_id, "teacher": {"model": "tiny-llama"}, **change}
    response = client.post("/distillations", json={k: v for k, v in body.items() if v is not None})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and words in error["message"]


def test_a_bad_prompt_file_names_each_line(live, keys):
    client = api(live, keys["student"])
    lines = [
        {"messages": [{"role": "user", "content": "fine"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
        {"messages": [{"role": "wizard", "content": "q"}]},
        {"prompt": "legacy"},
    ]
    content = ("".join(json.dumps(x) + "\n" for x in lines) + "{not json\n").encode()
    response = client.post("/distillations", json={"input_file": upload(client, content),
                                                   "teacher": {"model": "tiny-llama"}})  # fmt: skip
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "input_file" and error["code"] == "invalid_prompt_file"
    for expected in ("line 2, messages[1]: the prompt ends with an assistant message", "line 3, messages[0].role",
                     "line 4, messages", "line 5: not valid JSON"):  # fmt: skip
        assert expected in error["message"]


def test_a_job_resumes_after_its_worker_dies_without_paying_twice(live, proxy, keys, home):
    """The server (and so its embedded worker and the job's child) is SIGKILLed mid-job; the restarted server's
    worker takes the expired lease over and finishes the job: prompts answered before the crash are not asked
    again, and every prompt's answer is paid for once."""
    client = api(live, keys["student"])
    file_id = upload(client, prompts("crash", 10))
    forwarded_before = proxy.total_forwarded
    proxy.hold_after = forwarded_before + 3
    # request_timeout 30: the restarted teacher loads torch and its model on its first request (seconds, more on a
    # loaded machine); held requests die with the killed worker either way.
    body = remote_request(proxy, keys, file_id, concurrency=2, request_timeout=30)
    job_id = client.post("/distillations", json=body).json()["id"]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # held, and every answer the teacher gave is stored by the job
        crash = {text: n for text, n in proxy.forwarded.items() if text.startswith("crash")}
        answered = client.get(f"/distillations/{job_id}").json()["progress"]["answered"]
        if proxy.held.is_set() and crash and answered == len(crash):
            break
        time.sleep(0.2)
    else:
        raise AssertionError("the job never stored the answers it got before the crash")
    live["server"].process.kill()
    live["server"].process.wait()
    proxy.hold_after = None
    proxy.held.clear()  # the dead worker's requests are answered 503, never reaching the teacher
    live["server"] = start_server(home, ALLOW)
    proxy.target = live["server"].base_url
    job = wait_done(api(live, keys["student"]), job_id)
    assert job["status"] == "succeeded", job["error"]
    assert job["result"]["kept"] == 10 and job["usage"]["answers_paid"] == 10
    assert all(proxy.forwarded[text] == n for text, n in crash.items())  # not one of them asked again
    assert {t for t in proxy.forwarded if t.startswith("crash")} == {f"crash Question {i}" for i in range(10)}


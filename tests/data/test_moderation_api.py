"""Moderation through the unchanged `openai` SDK against a live server: the upload report lists findings, the
organization's policy (`warn` / `block`) decides whether a job may run, /v1/moderations parses in the SDK's
types, and redact writes a clean copy as a new file."""

from __future__ import annotations

import io
import json

import httpx
import openai
import pytest
from openai.types import ModerationCreateResponse

SECRET = "sk-proj-4f9a8B7c6D5e4F3g2H1i0J9k8L7m6N5o4P3q2R1s0T"


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


def training_rows() -> list[dict]:
    rows = [chat(f"What is {i} plus {i}?", f"{2 * i}.") for i in range(12)]
    rows[2] = chat("Where do I send the invoice?", "Send it to jane.doe@gmail.com, she pays with 4111 1111 1111 1111.")
    rows[6] = chat("Which key do we deploy with?", f"Use OPENAI_API_KEY={SECRET} in production.")
    rows[9] = chat("What do you say to critics?", "I will kill you if you come back.")
    return rows


def jsonl(rows: list[dict]) -> bytes:
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


@pytest.fixture(scope="module")
def key(live_server):
    return live_server.create_key("moderated")


@pytest.fixture(scope="module")
def client(live_server, key):
    return live_server.client(key, timeout=60)


@pytest.fixture(scope="module")
def http(live_server, key):
    with httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def flagged_file(client):
    return client.files.create(file=("train.jsonl", io.BytesIO(jsonl(training_rows()))), purpose="fine-tune").id


def set_policy(http, policy: str) -> None:
    response = http.post("/moderation/policy", json={"policy": policy})
    assert response.status_code == 200 and response.json()["policy"] == policy


def test_upload_report_lists_findings_per_line_with_masked_excerpts(http, flagged_file):
    report = http.get(f"/files/{flagged_file}/validation").json()
    moderation = report["moderation"] if "moderation" in report else report["report"]["moderation"]
    assert moderation["flagged_lines"] == [3, 7, 10]
    by_line = {(f["line"], f["detector"]) for f in moderation["findings"]}
    assert {(3, "email"), (3, "payment_card"), (7, "secret"), (10, "harmful")} <= by_line
    text = json.dumps(moderation)
    assert SECRET not in text and SECRET[4:12] not in text
    assert "4111 1111 1111 1111" not in text and "jane.doe@gmail.com" not in text
    card = next(f for f in moderation["findings"] if f["detector"] == "payment_card")
    assert card["field"] == "messages[1].content" and card["excerpt"].count("1111") == 1  # last 4 digits only


def test_policy_defaults_to_warn_and_rejects_unknown_values(http):
    assert http.get("/moderation/policy").json()["policy"] == "warn"
    bad = http.post("/moderation/policy", json={"policy": "strict"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "policy"


def test_warn_lets_the_job_be_created(client, http, flagged_file):
    set_policy(http, "warn")
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=flagged_file)
    assert job.status == "validating_files"
    client.fine_tuning.jobs.cancel(job.id)


def test_block_refuses_the_job_naming_the_lines_and_reasons(client, http, flagged_file):
    set_policy(http, "block")
    try:
        with pytest.raises(openai.BadRequestError) as refused:
            client.fine_tuning.jobs.create(model="tiny-llama", training_file=flagged_file)
    finally:
        set_policy(http, "warn")
    error = refused.value.body
    assert refused.value.status_code == 400 and error["param"] == "training_file"
    assert error["code"] == "moderation_blocked"
    message = error["message"]
    for expected in ("line 3", "personal_data/email", "personal_data/payment_card", "line 7", "secret/openai_api_key",
                     "line 10", "harassment/threatening"):
        assert expected in message, message
    assert SECRET not in message


def test_moderations_endpoint_parses_in_the_sdk_types(client):
    response = client.moderations.create(
        model="omni-moderation-latest",
        input=["I will kill you if you come back.", "What a lovely day for a walk.", f"my key is {SECRET}"],
    )
    assert isinstance(response, ModerationCreateResponse) and response.id.startswith("modr-")
    threat, calm, secret = response.results
    assert threat.flagged and threat.categories.harassment_threatening and threat.categories.violence
    assert threat.category_scores.violence == 1.0
    assert not calm.flagged and calm.category_scores.harassment < 0.5
    assert threat.category_applied_input_types.sexual == []  # openft does not judge this category
    assert threat.category_applied_input_types.violence == ["text"]
    findings = secret.model_extra["openft_findings"]
    assert findings[0]["detector"] == "secret" and SECRET not in json.dumps(findings)


def test_moderations_rejects_bad_input(http):
    missing = http.post("/moderations", json={})
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "input"
    image = http.post("/moderations", json={"input": [{"type": "image_url", "image_url": {"url": "x"}}]})
    assert image.status_code == 400 and image.json()["error"]["param"] == "input[0]"


def test_redact_writes_a_new_file_without_findings(client, http, flagged_file):
    response = http.post(f"/files/{flagged_file}/redact", json={})
    assert response.status_code == 200, response.text
    redacted = response.json()
    assert redacted["id"] != flagged_file and redacted["filename"] == "train.redacted.jsonl"
    assert redacted["status"] == "processed"
    summary = redacted["openft_redaction"]
    assert summary["dropped_lines"] == [10] and summary["n_lines_changed"] == 2
    content = client.files.content(redacted["id"]).text
    assert "[EMAIL]" in content and "[CARD_NUMBER]" in content and "[SECRET]" in content
    assert SECRET not in content and "jane.doe@gmail.com" not in content
    assert len(content.splitlines()) == 11
    report = http.get(f"/files/{redacted['id']}/validation").json()
    moderation = report["moderation"] if "moderation" in report else report["report"]["moderation"]
    assert moderation["n_findings"] == 0
    original = client.files.content(flagged_file).text  # nothing is lost
    assert SECRET in original
    # The clean copy passes a `block` policy.
    set_policy(http, "block")
    try:
        job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=redacted["id"])
        client.fine_tuning.jobs.cancel(job.id)
    finally:
        set_policy(http, "warn")

"""Per-organization quotas (issue 14): storage bytes and active jobs, configurable, refused with a clear
error that names the limit, and that the SDK does not retry blindly."""

from __future__ import annotations

import io
import json

import httpx
import openai
import pytest

from tests.fixtures.server import register_model, start_server, stop_server

QUOTA = 8192


def chat_jsonl(n: int) -> bytes:
    return b"".join(json.dumps({"messages": [{"role": "user", "content": f"Capital of country {i}?"},
                                             {"role": "assistant", "content": f"City {i}"}]}).encode() + b"\n"
                    for i in range(n))


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("openft-quotas")
    register_model(home, "tiny-llama", tiny_model_dir)
    live = start_server(home, {
        "OPENFT_VALIDATION_MODEL": "tiny-llama",
        "OPENFT_STORAGE_QUOTA_BYTES": str(QUOTA),
        "OPENFT_MAX_ACTIVE_JOBS": "1",
        "OPENFT_EMBEDDED_WORKER": "0",  # jobs stay queued: only the counting matters
    })
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def client(server):
    return server.client(server.create_key("quota-org"))


def test_uploads_beyond_the_storage_quota_are_refused_until_files_are_deleted(server, client):
    first = client.files.create(file=("a.txt", io.BytesIO(b"a" * 3000)), purpose="batch")
    client.files.create(file=("b.txt", io.BytesIO(b"b" * 3000)), purpose="batch")
    stored_before = sorted(p.name for p in (server.home / "files").iterdir())

    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("c.txt", io.BytesIO(b"c" * 3000)), purpose="batch")
    error = caught.value.response.json()["error"]
    assert error["code"] == "storage_quota_exceeded" and error["param"] == "file"
    assert "OPENFT_STORAGE_QUOTA_BYTES" in error["message"] and f"{QUOTA:,}" in error["message"]
    assert caught.value.response.headers["x-should-retry"] == "false"
    # Far over the quota: refused from the declared length, before the body is read.
    with pytest.raises(openai.BadRequestError, match="storage quota"):
        client.files.create(file=("huge.txt", io.BytesIO(b"h" * 200_000)), purpose="batch")
    assert sorted(p.name for p in (server.home / "files").iterdir()) == stored_before

    # Another organization has its own quota.
    other = server.client(server.create_key("other-quota-org"))
    other.files.create(file=("o.txt", io.BytesIO(b"o" * 3000)), purpose="batch")

    client.files.delete(first.id)
    client.files.create(file=("c.txt", io.BytesIO(b"c" * 3000)), purpose="batch")


def test_jobs_beyond_the_active_job_limit_get_a_429_that_is_not_retried(server):
    sent = []
    key = server.create_key("jobs-quota-org")
    client = openai.OpenAI(base_url=server.base_url, api_key=key, max_retries=2,
                           http_client=httpx.Client(event_hooks={"request": [sent.append]}, timeout=120))
    training = client.files.create(file=("train.jsonl", io.BytesIO(chat_jsonl(12))), purpose="fine-tune")
    assert training.status == "processed", training.status_details
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=training.id)

    sent.clear()
    with pytest.raises(openai.RateLimitError) as caught:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=training.id)
    assert len(sent) == 1  # not retried
    error = caught.value.response.json()["error"]
    assert error["code"] == "active_jobs_limit_exceeded" and "OPENFT_MAX_ACTIVE_JOBS" in error["message"]
    # Evaluations share the limit: both occupy the same workers.
    evals = httpx.post(f"{server.base_url}/evaluations", headers={"Authorization": f"Bearer {key}"},
                       json={"eval_file": training.id, "model": "tiny-llama"}, timeout=60)
    assert evals.status_code == 429 and evals.json()["error"]["code"] == "active_jobs_limit_exceeded"

    client.fine_tuning.jobs.cancel(job.id)
    assert client.fine_tuning.jobs.create(model="tiny-llama", training_file=training.id).status

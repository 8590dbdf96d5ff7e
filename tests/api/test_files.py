"""The Files API through the unchanged `openai` SDK against a live `openft serve`."""

from __future__ import annotations

import io
import json

import httpx
import openai
import pytest
from openai.types import FileDeleted, FileObject


def chat_example(i: int) -> dict:
    return {
        "messages": [
            {"role": "system", "content": "Answer with the capital only."},
            {"role": "user", "content": f"Capital of country {i}?"},
            {"role": "assistant", "content": f"City {i}"},
        ]
    }


def jsonl(rows: list) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


@pytest.fixture(scope="module")
def key(live_server):
    return live_server.create_key("files-org")


@pytest.fixture(scope="module")
def client(live_server, key):
    return live_server.client(key)


def test_valid_training_file_is_processed_with_a_report(client, live_server, key):
    uploaded = client.files.create(file=("train.jsonl", io.BytesIO(jsonl([chat_example(i) for i in range(12)]))),
                                   purpose="fine-tune")
    assert uploaded.status == "processed"
    assert uploaded.purpose == "fine-tune" and uploaded.filename == "train.jsonl"
    raw = httpx.get(f"{live_server.base_url}/files/{uploaded.id}", headers={"Authorization": f"Bearer {key}"}).json()
    FileObject.model_validate(raw)
    assert set(raw) >= {"id", "object", "bytes", "created_at", "filename", "purpose", "status"}

    report = httpx.get(f"{live_server.base_url}/files/{uploaded.id}/validation",
                       headers={"Authorization": f"Bearer {key}"}).json()
    assert report["ok"] is True and report["format"] == "chat"
    assert report["stats"]["n_examples"] == 12
    assert report["errors"] == []


def test_bad_training_file_reports_every_line(client, live_server, key):
    rows = [json.dumps(chat_example(i)) for i in range(12)]
    rows[2] = "{not json"
    rows[7] = json.dumps({"messages": [{"role": "user", "content": "hi"}]})
    uploaded = client.files.create(file=("bad.jsonl", io.BytesIO("\n".join(rows).encode())), purpose="fine-tune")
    assert uploaded.status == "error"
    assert "line 3" in uploaded.status_details.lower()

    report = httpx.get(f"{live_server.base_url}/files/{uploaded.id}/validation",
                       headers={"Authorization": f"Bearer {key}"}).json()
    found = {(e["line"], e["code"]) for e in report["errors"]}
    assert (3, "invalid_json") in found
    assert (8, "example_missing_assistant_message") in found
    # The bytes are kept exactly as uploaded, so the user can fix and compare.
    assert client.files.content(uploaded.id).read() == "\n".join(rows).encode()


def test_list_paginates_in_both_orders(live_server):
    client = live_server.client(live_server.create_key("paging-org"))
    ids = [client.files.create(file=(f"f{i}.txt", io.BytesIO(b"x" * i)), purpose="batch").id for i in range(5)]

    first = client.files.list(limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2] and first.has_more
    assert [f.id for f in client.files.list(limit=2)] == ids[::-1]  # the SDK follows `after` to the end
    assert [f.id for f in client.files.list(limit=2, order="asc")] == ids
    assert [f.id for f in client.files.list(purpose="fine-tune")] == []

    raw = client.files.with_raw_response.list(limit=5, order="asc").http_response.json()
    assert raw["object"] == "list" and raw["has_more"] is False
    assert raw["first_id"] == ids[0] and raw["last_id"] == ids[-1]

    with pytest.raises(openai.BadRequestError) as bad_limit:
        client.files.list(limit=0)
    assert bad_limit.value.body["param"] == "limit"


def test_retrieve_content_delete(client):
    created = client.files.create(file=("notes.txt", io.BytesIO(b"some bytes\x00\xff")), purpose="user_data")
    assert client.files.retrieve(created.id).bytes == len(b"some bytes\x00\xff")
    assert client.files.content(created.id).read() == b"some bytes\x00\xff"
    deleted = client.files.delete(created.id)
    assert isinstance(deleted, FileDeleted) and deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)


def test_bad_requests_name_the_parameter(client, live_server):
    with pytest.raises(openai.BadRequestError) as purpose:
        client.files.create(file=("a.jsonl", io.BytesIO(b"{}")), purpose="nonsense")
    assert purpose.value.body["param"] == "purpose"
    with pytest.raises(openai.BadRequestError) as extension:
        client.files.create(file=("train.csv", io.BytesIO(b"a,b")), purpose="fine-tune")
    assert extension.value.body["param"] == "file"
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve("file-doesnotexist")
    with pytest.raises(openai.AuthenticationError):
        live_server.client("sk-wrong").files.list()
    response = httpx.post(f"{live_server.base_url}/files", headers={"Authorization": f"Bearer {client.api_key}"},
                          data={"purpose": "batch"})
    assert response.status_code == 400
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_file_names_never_become_paths(client, live_server):
    created = client.files.create(file=("../../etc/passwd", io.BytesIO(b"harmless")), purpose="user_data")
    assert client.files.retrieve(created.id).filename == "../../etc/passwd"
    stored = list((live_server.home / "files").iterdir())
    assert all(".." not in p.name and "passwd" not in p.name for p in stored)
    assert not (live_server.home.parent / "etc").exists()


def test_expiring_file(client):
    created = client.files.create(
        file=("tmp.txt", io.BytesIO(b"x")), purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert created.expires_at == created.created_at + 3600
    with pytest.raises(openai.BadRequestError) as bad:
        client.files.create(file=("tmp.txt", io.BytesIO(b"x")), purpose="user_data",
                            expires_after={"anchor": "created_at", "seconds": 5})
    assert bad.value.body["param"] == "expires_after.seconds"


def test_other_organization_sees_nothing(live_server):
    alice = live_server.client(live_server.create_key("alice-org"))
    bob = live_server.client(live_server.create_key("bob-org"))
    secret = alice.files.create(file=("secret.txt", io.BytesIO(b"alice only")), purpose="user_data")

    assert secret.id not in [f.id for f in bob.files.list()]
    with pytest.raises(openai.NotFoundError):
        bob.files.retrieve(secret.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.content(secret.id)
    with pytest.raises(openai.NotFoundError):
        bob.files.delete(secret.id)
    with pytest.raises(openai.BadRequestError):
        bob.files.list(after=secret.id)  # a foreign id is not a usable cursor either
    assert alice.files.content(secret.id).read() == b"alice only"

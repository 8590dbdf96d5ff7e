"""The policy as the worker applies it at a job's validating step, and the redact function on its own."""

from __future__ import annotations

import io
import json

import pytest

from openft.data.moderation.policy import scan_jsonl
from openft.data.moderation.redact import redact_jsonl
from openft.store import files as file_store
from openft.store.accounts import get_or_create_organization
from openft.store.blobs import BlobStore
from openft.store.db import session_scope, upgrade_database
from openft.store.moderation_tables import get_policy, set_policy
from openft.training.moderation_gate import moderation_outcome


def chat(user: str, assistant: str) -> dict:
    return {"messages": [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]}


ROWS = [
    chat("hi", "hello"),
    chat("IBAN?", "DE89 3704 0044 0532 0130 00"),
    chat("key?", "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"),
    chat("plan?", "I'm going to kill myself"),
]

@pytest.fixture
def stored_file(openft_home):
    upgrade_database()
    blobs = BlobStore(openft_home.files_dir)
    blobs.root.mkdir(parents=True, exist_ok=True)
    blobs.path("blob_moderationtest0001").write_bytes(b"".join(json.dumps(r).encode() + b"\n" for r in ROWS))
    with session_scope() as session:
        org = get_or_create_organization(session, "acme")
        file_store.add_file(
            session, file_id="file-mod1", organization_id=org.id, filename="t.jsonl", purpose="fine-tune",
            size=1, storage_key="blob_moderationtest0001", status="processed", validation={"ok": True},
        )
        return org.id, blobs.path("blob_moderationtest0001")


def test_scan_finds_each_line(stored_file):
    _, path = stored_file
    result = scan_jsonl(path)
    assert result["flagged_lines"] == [2, 3, 4]
    assert result["by_detector"] == {"harmful": 1, "iban": 1, "secret": 1}


def test_policy_decides_the_validating_step(stored_file):
    org_id, _ = stored_file
    with session_scope() as session:
        assert get_policy(session, org_id) == "warn"
    level, message = moderation_outcome(org_id, "file-mod1", {})  # an old report: scanned now
    assert level == "warn" and "3 line(s)" in message and "policy: warn" in message
    with session_scope() as session:
        set_policy(session, org_id, "block")
    level, message = moderation_outcome(org_id, "file-mod1", {})
    assert level == "error" and "line 2: personal_data/iban" in message and "line 4: self-harm" in message
    with session_scope() as session:
        set_policy(session, org_id, "off")
    assert moderation_outcome(org_id, "file-mod1", {}) is None
    with pytest.raises(ValueError, match="policy must be one of"), session_scope() as session:
        set_policy(session, org_id, "strict")


def test_redact_replaces_values_drops_harmful_lines_and_leaves_no_findings(stored_file, tmp_path):
    _, path = stored_file
    out = io.BytesIO()
    summary = redact_jsonl(path, out)
    assert summary.dropped_lines == [4] and dict(summary.replaced) == {"iban": 1, "secret": 1}
    cleaned = tmp_path / "clean.jsonl"
    cleaned.write_bytes(out.getvalue())
    assert scan_jsonl(cleaned)["n_findings"] == 0
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert lines[1]["messages"][1]["content"] == "[IBAN]" and lines[2]["messages"][1]["content"] == "[SECRET]"
    assert lines[0] == ROWS[0]  # untouched lines are copied byte for byte

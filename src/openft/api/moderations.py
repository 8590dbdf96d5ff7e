"""Moderation: OpenAI's POST /v1/moderations, plus openft's policy and redact extensions (docs/moderation.md).

- POST /v1/moderations: OpenAI's request and response shape, backed by openft's offline detectors. Categories
  openft cannot judge (sexual, hate, violence/graphic, ...) are always false with score 0, and their
  `category_applied_input_types` is empty, which says so. Each result also carries `openft_findings`: personal
  data and secrets found in that input (masked excerpts), which OpenAI's endpoint does not report.
- GET / POST /v1/moderation/policy: the organization's policy for training data (off | warn | block).
- POST /v1/files/{file_id}/redact: a cleaned copy of a training file, stored as a new file.
"""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends
from fastapi.concurrency import run_in_threadpool

from openft.api.auth import current_org
from openft.api.errors import bad_request, not_found
from openft.config import get_settings
from openft.data.moderation.findings import excerpt
from openft.data.moderation.harmful import (
    OPENAI_CATEGORIES,
    SUPPORTED_CATEGORIES,
    category_scores,
    flagged_categories,
    harassment_scores,
)
from openft.data.moderation.scan import matches_in
from openft.store import files as file_store
from openft.store.blobs import BlobStore, open_private, storage_errors
from openft.store.db import session_scope
from openft.store.ids import new_id
from openft.store.moderation_tables import POLICIES, get_policy, set_policy
from openft.store.quotas import check_storage
from openft.store.tables import Organization

router = APIRouter(tags=["moderation"])
Org = Annotated[Organization, Depends(current_org)]

MODEL = "openft-moderation-1"
MAX_INPUTS = 128
MAX_INPUT_CHARS = 100_000


def _inputs(body: dict[str, Any]) -> list[str]:
    """OpenAI's `input`: a string, a list of strings, or a list of {type: text|image_url} parts."""
    value = body.get("input")
    if value is None:
        raise bad_request("Missing required parameter: 'input'.", param="input")
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise bad_request("'input' must be a string, an array of strings or an array of input parts.", param="input")
    if len(items) > MAX_INPUTS:
        raise bad_request(f"'input' may hold at most {MAX_INPUTS} items.", param="input")
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, dict) and item.get("type") == "text" and isinstance(item.get("text"), str):
            item = item["text"]
        elif isinstance(item, dict) and item.get("type") == "image_url":
            raise bad_request("openft moderates text only; image inputs are not supported.", param=f"input[{i}]")
        if not isinstance(item, str):
            raise bad_request("Each input must be a string or a {type: 'text', text} part.", param=f"input[{i}]")
        if len(item) > MAX_INPUT_CHARS:
            raise bad_request(f"Each input may hold at most {MAX_INPUT_CHARS:,} characters.", param=f"input[{i}]")
        texts.append(item)
    return texts


def moderation_result(text: str, harassment: float) -> dict[str, Any]:
    scores = category_scores(text, harassment)
    categories = flagged_categories(scores)
    matches = matches_in(text, harassment)
    findings = [
        {"detector": m.detector, "category": m.category, "excerpt": excerpt(text, m, matches), "note": m.note}
        for m in matches
        if m.detector != "harmful"
    ]
    return {
        "flagged": any(categories.values()),
        "categories": categories,
        "category_scores": {c: round(scores[c], 6) for c in OPENAI_CATEGORIES},
        "category_applied_input_types": {c: ["text"] if c in SUPPORTED_CATEGORIES else [] for c in OPENAI_CATEGORIES},
        "openft_findings": findings,
    }


def moderate(texts: list[str]) -> list[dict[str, Any]]:
    return [moderation_result(t, s) for t, s in zip(texts, harassment_scores(texts), strict=True)]


@router.post("/v1/moderations")
async def create_moderation(org: Org, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise bad_request("'model' must be a string.", param="model")
    texts = _inputs(body)
    results = await run_in_threadpool(moderate, texts)
    return {"id": new_id("modr-"), "model": MODEL, "results": results}


def _policy_wire(policy: str) -> dict[str, Any]:
    return {"object": "moderation.policy", "policy": policy, "policies": list(POLICIES)}


@router.get("/v1/moderation/policy")
def read_policy(org: Org) -> dict[str, Any]:
    with session_scope() as session:
        return _policy_wire(get_policy(session, org.id))


@router.post("/v1/moderation/policy")
def update_policy(org: Org, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    policy = body.get("policy")
    if policy not in POLICIES:
        raise bad_request(f"'policy' must be one of {', '.join(POLICIES)}.", param="policy")
    with session_scope() as session:
        return _policy_wire(set_policy(session, org.id, policy))


def _redact_to_blob(source, blobs: BlobStore, key: str, drop_harmful: bool):
    from openft.data.moderation.redact import redact_jsonl

    partial = blobs.partial_path(key)
    with storage_errors("write the redacted copy"), os.fdopen(open_private(partial), "wb") as out:
        summary = redact_jsonl(source, out, drop_harmful=drop_harmful)
    return partial, summary


@router.post("/v1/files/{file_id}/redact")
async def redact_file(
    file_id: str, org: Org, body: Annotated[dict[str, Any] | None, Body()] = None
) -> dict[str, Any]:
    body = body or {}
    drop_harmful = body.get("drop_harmful", True)
    if not isinstance(drop_harmful, bool):
        raise bad_request("'drop_harmful' must be a boolean.", param="drop_harmful")
    with session_scope() as session:
        row = file_store.get_file(session, org.id, file_id)
        if row is None:
            raise not_found(f"No such File object: {file_id}", param="file_id")
        if row.purpose != "fine-tune":
            raise bad_request("Only fine-tune files can be redacted.", param="file_id")
        filename, storage_key, purpose = row.filename, row.storage_key, row.purpose
    blobs = BlobStore(get_settings().files_dir)
    blobs.ensure_root()
    key = new_id("blob_", 32)
    partial, summary = await run_in_threadpool(_redact_to_blob, blobs.path(storage_key), blobs, key, drop_harmful)
    try:
        from openft.data.validation_service import validate_training_file

        outcome = await run_in_threadpool(validate_training_file, partial, get_settings().validation_model)
        stem = filename[: -len(".jsonl")] if filename.endswith(".jsonl") else filename
        with session_scope() as session:
            size = partial.stat().st_size
            check_storage(session, org.id, size)
            with storage_errors("store the redacted copy", "Nothing was stored."):
                blobs.commit(partial, key)
            new = file_store.add_file(
                session,
                file_id=new_id("file-"),
                organization_id=org.id,
                filename=f"{stem}.redacted.jsonl",
                purpose=purpose,
                size=size,
                storage_key=key,
                status=outcome.status,
                status_details=outcome.status_details,
                validation=outcome.report,
                created_at=int(time.time()),
            )
            from openft.api.files import to_wire

            wire = to_wire(new).model_dump()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    return {**wire, "openft_redaction": {"source_file": file_id, **summary.as_dict()}}

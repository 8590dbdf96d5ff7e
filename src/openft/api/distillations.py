"""Distillations (an openft extension): a teacher model answers a file of prompts and the kept answers become a
training file. Thin: openft.evals.distill checks, stores and runs them; everything is scoped to the caller's
organization (another organization's ids are 404)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool

from openft.api.auth import current_org
from openft.api.errors import OpenAIError, bad_request, not_found
from openft.evals.distill import objects
from openft.evals.distill.requests import DistillRequestError, check_request
from openft.store.db import session_scope
from openft.store.pagination import UnknownCursor
from openft.store.tables import Organization

router = APIRouter(prefix="/v1/distillations", tags=["distillations"])
Org = Annotated[Organization, Depends(current_org)]


def _not_found(distillation_id: str) -> OpenAIError:
    return not_found(f"Could not find distillation {distillation_id}.", param="distillation_id")


def _create(org_id: str, body: Any) -> dict[str, Any]:
    with session_scope() as session:
        try:
            checked = check_request(session, org_id, body)
        except DistillRequestError as error:
            raise bad_request(error.message, param=error.param, code=error.code) from None
        return objects.to_wire(objects.create(session, org_id, checked))


@router.post("", status_code=201)
async def create(org: Org, request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise bad_request("The request body must be a JSON object.") from None
    # In a thread: checking reads the whole prompt file and may resolve the teacher's host name.
    return await run_in_threadpool(_create, org.id, body)


@router.get("")
def list_(org: Org, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    with session_scope() as session:
        try:
            page = objects.list_page(session, org.id, after=after, limit=limit)
        except UnknownCursor:
            raise bad_request(f"No distillation with id '{after}' to list after.", param="after") from None
        data = [objects.to_wire(row) for row in page.rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": page.has_more}  # fmt: skip


@router.get("/{distillation_id}")
def retrieve(distillation_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        row = objects.get(session, org.id, distillation_id)
        if row is None:
            raise _not_found(distillation_id)
        return objects.to_wire(row)


@router.get("/{distillation_id}/report")
def report(distillation_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        row = objects.get(session, org.id, distillation_id)
        if row is None:
            raise _not_found(distillation_id)
        return objects.report_to_wire(row)


@router.post("/{distillation_id}/cancel")
def cancel(distillation_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        row = objects.get(session, org.id, distillation_id)
        if row is None:
            raise _not_found(distillation_id)
        if row.status in objects.FINAL_STATUSES:
            raise bad_request(f"Distillation {distillation_id} has already {row.status}; only queued or running "
                              "ones can be cancelled.", param="distillation_id")  # fmt: skip
        objects.cancel(session, row)
        return objects.to_wire(row)

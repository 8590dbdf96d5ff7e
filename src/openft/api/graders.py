"""OpenAI's graders API: `POST /v1/fine_tuning/alpha/graders/run` and `/validate`.

A grader that fails on the sample (Python exception, sample not JSON, judge reply unreadable) is a 200 with
`metadata.errors` set, as OpenAI answers; a grader that is malformed is a 400 naming the field.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from starlette.concurrency import run_in_threadpool

from openft.api.auth import current_org
from openft.api.errors import OpenAIError, bad_request
from openft.api.serving_state import resolve_model
from openft.evals import judge_endpoints
from openft.evals.requests import EvalRequestError
from openft.graders import GraderSpecError, check_grader, grade
from openft.graders.spec import sub_graders
from openft.store.db import session_scope
from openft.store.tables import Organization

router = APIRouter(prefix="/v1/fine_tuning/alpha/graders", tags=["graders"])
Org = Annotated[Organization, Depends(current_org)]
JUDGE_TIMEOUT_S = 300


def checked_grader(body: dict[str, Any], *, allowed: tuple[str, ...]) -> dict[str, Any]:
    unknown = sorted(set(body) - set(allowed))
    if unknown:
        raise bad_request(f"Unrecognized request argument supplied: {unknown[0]}.", param=unknown[0])
    if "grader" not in body:
        raise bad_request("Missing required parameter: 'grader'.", param="grader")
    try:
        return check_grader(body["grader"])
    except GraderSpecError as error:
        raise bad_request(error.message, param=error.param) from None


def judge_models(spec: dict[str, Any]) -> list[str]:
    if spec["type"] in ("score_model", "label_model"):
        return [spec["model"]]
    if spec["type"] == "multi":
        return [m for sub in (sub_graders(spec) or {}).values() for m in judge_models(sub)]
    return []


def check_judges(org: Organization, spec: dict[str, Any]) -> None:
    """404 model_not_found for a judge that is neither served to this organization nor registered by it."""
    registered = judge_endpoints.registered_models(org.id)
    for model in judge_models(spec):
        if model not in registered:
            resolve_model(org.id, model)


def server_judge(request: Request, org: Organization, loop: asyncio.AbstractEventLoop):
    """The org's registered endpoints, else the server's own engines (or vLLM), called from the grading thread."""
    from openft.api.chat import _backend

    def chat_completion(body: dict[str, Any]) -> dict[str, Any]:
        resolved = resolve_model(org.id, body["model"])
        backend = _backend(request, resolved)
        future = asyncio.run_coroutine_threadsafe(backend.chat_completion(body), loop)
        return future.result(timeout=JUDGE_TIMEOUT_S)

    return judge_endpoints.organization_judge(org.id, chat_completion)


@router.post("/validate")
def validate(org: Org, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    spec = checked_grader(body, allowed=("grader",))
    check_judges(org, spec)
    return {"grader": spec}


@router.post("/run")
async def run(request: Request, org: Org, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    spec = checked_grader(body, allowed=("grader", "model_sample", "item"))
    sample = body.get("model_sample")
    if not isinstance(sample, str):
        raise bad_request("'model_sample' must be a string (the model's output).", param="model_sample")
    item = body.get("item", {})
    if item is not None and not isinstance(item, dict):
        raise bad_request("'item' must be an object (it fills the {{item.*}} namespace).", param="item")
    check_judges(org, spec)
    judge = server_judge(request, org, asyncio.get_running_loop())
    result = await run_in_threadpool(grade, spec, sample, item or {}, judge=judge)
    return result.wire()


# openft extension: OpenAI-compatible endpoints an organization names for judge models ------------------------


@router.post("/judge_endpoints")
def register_judge_endpoint(org: Org, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    with session_scope() as session:
        try:
            return judge_endpoints.to_wire(judge_endpoints.register(session, org.id, body))
        except EvalRequestError as error:
            raise bad_request(error.message, param=error.param, code=error.code) from None


@router.get("/judge_endpoints")
def list_judge_endpoints(org: Org) -> dict[str, Any]:
    with session_scope() as session:
        data = [judge_endpoints.to_wire(row) for row in judge_endpoints.list_endpoints(session, org.id)]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": False}  # fmt: skip


@router.delete("/judge_endpoints/{model:path}")
def delete_judge_endpoint(model: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        row = judge_endpoints.find(session, org.id, model)
        if row is None:
            raise OpenAIError(404, f"No judge endpoint is registered for `{model}`.", param="model")
        session.delete(row)
    return {"object": "grader.judge_endpoint.deleted", "model": model, "deleted": True}

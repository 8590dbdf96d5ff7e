"""Judges of score_model / label_model graders: a model openft serves to the organization, or an
OpenAI-compatible endpoint the organization registered for that model name.

Endpoints are stored per organization with their API key sealed (store/secrets.py) or named as a server
variable `OPENFT_OUTBOUND_KEY_*`; URLs pass the outbound allow-list (openft.outbound) when registered and on
every connection. openft.evals.requests (which loads the model registry, and so torch) is imported only where
needed, so a worker grading given samples never loads torch.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openft.graders import Judge
from openft.graders.judges import backend_judge
from openft.store.db import session_scope
from openft.store.ids import new_id
from openft.store.openai_eval_tables import JudgeEndpoint

Complete = Callable[[dict[str, Any]], dict[str, Any]]
FIELDS = ("model", "base_url", "api_key", "api_key_env", "remote_model")


def register(session: Session, organization_id: str, body: dict[str, Any]) -> JudgeEndpoint:
    """Create or replace the endpoint for `body["model"]`; EvalRequestError names a bad parameter."""
    from openft.evals.requests import EvalRequestError, _endpoint  # the same checks as /v1/evaluations endpoints

    unknown = sorted(set(body) - set(FIELDS))
    if unknown:
        raise EvalRequestError(f"Unrecognized request argument supplied: {unknown[0]}.", unknown[0])
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise EvalRequestError("Missing required parameter: 'model'.", "model")
    remote = body.get("remote_model", body["model"])
    if not isinstance(remote, str) or not remote:
        raise EvalRequestError("'remote_model' must be a model name.", "remote_model")
    try:
        checked = _endpoint({"endpoint": body}, "endpoint", ("base_url", "api_key"))
    except EvalRequestError as error:  # the checks name `endpoint.x`; this request's parameters are top-level
        param = (error.param or "").removeprefix("endpoint.") or None
        raise EvalRequestError(error.message.replace("endpoint.", ""), param, error.code) from None
    row = find(session, organization_id, body["model"])
    if row is None:
        row = JudgeEndpoint(id=new_id("judge_"), organization_id=organization_id, model=body["model"])
        session.add(row)
    row.remote_model, row.base_url, row.created_at = remote, checked["base_url"], int(time.time())
    row.api_key, row.api_key_env = checked.get("api_key"), checked.get("api_key_env")
    session.flush()
    return row


def find(session: Session, organization_id: str, model: str) -> JudgeEndpoint | None:
    return session.scalars(
        select(JudgeEndpoint).where(JudgeEndpoint.organization_id == organization_id, JudgeEndpoint.model == model)
    ).first()


def list_endpoints(session: Session, organization_id: str) -> list[JudgeEndpoint]:
    stmt = select(JudgeEndpoint).where(JudgeEndpoint.organization_id == organization_id).order_by(JudgeEndpoint.model)
    return list(session.scalars(stmt))


def to_wire(row: JudgeEndpoint) -> dict[str, Any]:
    return {"object": "grader.judge_endpoint", "id": row.id, "model": row.model, "remote_model": row.remote_model,
            "base_url": row.base_url, "api_key_env": row.api_key_env, "created_at": row.created_at}  # fmt: skip


def _remote_complete(row: JudgeEndpoint) -> Complete:
    from openai import OpenAI

    from openft.evals.requests import endpoint_api_key
    from openft.outbound import guarded_http_client

    key = endpoint_api_key({"api_key": row.api_key, "api_key_env": row.api_key_env}, "endpoint") or "none"
    client = OpenAI(base_url=row.base_url, api_key=key, timeout=120, max_retries=2,
                    http_client=guarded_http_client(timeout=120))  # fmt: skip
    remote_model = row.remote_model

    def complete(body: dict[str, Any]) -> dict[str, Any]:
        params = {k: v for k, v in body.items() if k not in ("model", "messages")}
        return client.chat.completions.create(model=remote_model, messages=body["messages"], **params).model_dump()

    return complete


def organization_judge(organization_id: str, local_complete: Complete) -> Judge:
    """A Judge that sends each model to the organization's registered endpoint, or else to `local_complete`."""
    with session_scope() as session:
        rows = {row.model: row for row in list_endpoints(session, organization_id)}
    remote: dict[str, Complete] = {}

    def complete(body: dict[str, Any]) -> dict[str, Any]:
        row = rows.get(body["model"])
        if row is None:
            return local_complete(body)
        if row.model not in remote:
            remote[row.model] = _remote_complete(row)
        return remote[row.model](body)

    return backend_judge(complete)


def registered_models(organization_id: str) -> set[str]:
    with session_scope() as session:
        return {row.model for row in list_endpoints(session, organization_id)}

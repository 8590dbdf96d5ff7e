"""Evaluations API (an openft extension): compare zero-shot, few-shot, retrieval few-shot, RAG over uploaded
documents, function calling, fine-tuned models (alone and with RAG) and an external endpoint on a held-out file;
reports and the fine-tune-or-prompt advice. Request fields are checked in openft.evals.requests."""

from __future__ import annotations

import math
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Query, Request
from fastapi.responses import Response

from openft.api.auth import current_org
from openft.api.errors import OpenAIError, bad_request, not_found
from openft.evals import jobs as eval_jobs
from openft.evals.advisor import advise
from openft.evals.forgetting import summary as forgetting_summary
from openft.evals.report import FORMATS, build_report, render
from openft.evals.requests import EvalRequestError, advice_settings, check_request, public_config
from openft.pricing import UnknownModelPrice
from openft.store.db import session_scope
from openft.store.eval_tables import EvalRun
from openft.store.pagination import UnknownCursor
from openft.store.tables import Organization

router = APIRouter(prefix="/v1/evaluations", tags=["evaluations"])
Org = Annotated[Organization, Depends(current_org)]
ADVICE_QUERY = (
    "requests_per_day",
    "horizon_months",
    "days_per_month",
    "hosted_training_model",
    "device",
    "n_devices",
    "concurrency",
    "price_per_device_hour",
)


def summary(results: dict[str, Any] | None) -> dict[str, Any] | None:
    if not results:
        return None
    metric = results["primary_metric"]
    return {
        "metric": metric,
        "ranking": results["ranking"],
        "strategies": [
            {
                "name": s["name"],
                "model": s["model"],
                "quality": s["quality"].get(metric),
                "mean_prompt_tokens": (s["prompt_tokens"] or {}).get("mean"),
                "mean_completion_tokens": (s["completion_tokens"] or {}).get("mean"),
                "latency_p50_s": (s["latency_s"] or {}).get("p50"),
                "latency_p95_s": (s["latency_s"] or {}).get("p95"),
                "n_errors": s["n_errors"],
            }
            for s in results["strategies"]
        ],
        "forgetting": forgetting_summary(results),  # None when no fine-tuned model was checked
    }


def run_to_wire(run: EvalRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "object": "evaluation",
        "status": run.status,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "progress": run.progress,
        "error": run.error,
        "metadata": run.eval_metadata,
        **public_config(run.config),
        "summary": json_safe(summary(run.results)),
    }


def _not_found(run_id: str) -> OpenAIError:
    return not_found(f"Could not find evaluation {run_id}.", param="evaluation_id")


def _request_error(error: EvalRequestError) -> OpenAIError:
    return bad_request(error.message, param=error.param, code=error.code)


@router.post("")
def create(org: Org, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    with session_scope() as session:
        try:
            checked = check_request(session, org.id, body)
        except EvalRequestError as error:
            raise _request_error(error) from None
        return run_to_wire(eval_jobs.create_run(session, org.id, checked))


@router.get("")
def list_(org: Org, after: str | None = None, limit: Annotated[int, Query(ge=1, le=100)] = 20) -> dict[str, Any]:
    with session_scope() as session:
        try:
            page = eval_jobs.list_runs(session, org.id, after=after, limit=limit)
        except UnknownCursor:
            raise bad_request(f"No evaluation with id '{after}' to list after.", param="after") from None
        data = [run_to_wire(r) for r in page.rows]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
    }


def _load(org: Organization, run_id: str) -> EvalRun:
    with session_scope() as session:
        run = eval_jobs.get_run(session, org.id, run_id)
        if run is None:
            raise _not_found(run_id)
        return run


@router.get("/{run_id}")
def retrieve(run_id: str, org: Org) -> dict[str, Any]:
    return run_to_wire(_load(org, run_id))


@router.post("/{run_id}/cancel")
def cancel(run_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        run = eval_jobs.get_run(session, org.id, run_id)
        if run is None:
            raise _not_found(run_id)
        if run.status in eval_jobs.FINAL_STATUSES:
            raise bad_request(
                f"Evaluation {run_id} has already {run.status}; only queued or running ones can be cancelled.",
                param="evaluation_id",
            )
        eval_jobs.cancel_run(run)
        return run_to_wire(run)


def json_safe(value: Any) -> Any:
    """JSON has no Infinity or NaN: a number that is not finite (a break-even that is never reached, a ratio
    over zero) is sent as null, which docs/evaluations.md documents as "not defined"."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def _advice(run: EvalRun, params: dict[str, Any]) -> dict[str, Any]:
    if run.status != "succeeded" or not run.results:
        raise bad_request(
            f"Evaluation {run.id} is {run.status}; reports and advice need a succeeded evaluation.",
            param="evaluation_id",
            code="evaluation_not_ready",
        )
    try:
        return json_safe(advise(run.results, advice_settings(params)))
    except EvalRequestError as error:
        raise _request_error(error) from None
    except UnknownModelPrice as error:
        raise bad_request(str(error), param="hosted_models") from None


@router.post("/{run_id}/advice")
def advice(run_id: str, org: Org, body: Annotated[dict[str, Any] | None, Body()] = None) -> dict[str, Any]:
    return {"object": "evaluation.advice", "evaluation_id": run_id, **_advice(_load(org, run_id), body or {})}


@router.get("/{run_id}/report")
def report(run_id: str, org: Org, request: Request, format: str = "json") -> Response:
    if format not in FORMATS:
        raise bad_request(f"Invalid value for 'format': '{format}'. Expected one of {', '.join(FORMATS)}.", "format")
    run = _load(org, run_id)
    params = {k: v for k, v in request.query_params.items() if k in ADVICE_QUERY}
    wire = run_to_wire(run)
    about = {k: wire[k] for k in ("id", "created_at", "finished_at", "model", "eval_file", "training_file")}
    body, media_type = render(build_report(json_safe(run.results or {}), _advice(run, params), about), format)
    return Response(body, media_type=media_type)

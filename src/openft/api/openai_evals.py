"""OpenAI's Evals API under /v1/evals: evals, runs (durable jobs on the shared queue) and output items.

Thin: requests are checked by openft.evals.openai_requests, stored by openft.evals.openai_objects and run by
openft.evals.openai_runs. Everything is scoped to the caller's organization: another organization's ids are 404.
(openft's own comparison API lives at /v1/evaluations and is unrelated.)
"""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Query, Request

from openft.api.auth import current_org
from openft.api.errors import OpenAIError, bad_request, not_found
from openft.api.serving_state import resolve_model
from openft.config import get_settings
from openft.evals import openai_objects as objects
from openft.evals.openai_requests import (
    OpenAIEvalRequestError,
    check_data_source_config,
    check_metadata,
    check_name,
    check_rows,
    check_sampling,
    check_testing_criteria,
    parse_jsonl_rows,
)
from openft.store.blobs import BlobStore
from openft.store.db import session_scope
from openft.store.files import get_file
from openft.store.openai_eval_tables import OpenAIEval, OpenAIEvalOutputItem, OpenAIEvalRun
from openft.store.pagination import Page, UnknownCursor
from openft.store.tables import Organization

router = APIRouter(prefix="/v1/evals", tags=["evals"])
Org = Annotated[Organization, Depends(current_org)]
Limit = Annotated[int, Query(ge=1, le=100)]
Order = Literal["asc", "desc"]
RUN_STATUSES = ("queued", "in_progress", "completed", "canceled", "failed")
EVAL_FILE_PURPOSES = ("evals", "fine-tune", "user_data")


def _bad(error: OpenAIEvalRequestError) -> OpenAIError:
    return bad_request(error.message, param=error.param, code=error.code)


def eval_to_wire(row: OpenAIEval) -> dict[str, Any]:
    return {"object": "eval", "id": row.id, "name": row.name, "created_at": row.created_at,
            "data_source_config": row.data_source_config, "testing_criteria": row.testing_criteria,
            "metadata": row.eval_metadata}  # fmt: skip


def report_url(request: Request, run: OpenAIEvalRun) -> str:
    return f"{str(request.base_url).rstrip('/')}/ui/#/evals/{run.eval_id}/runs/{run.id}"


def run_to_wire(run: OpenAIEvalRun, request: Request) -> dict[str, Any]:
    return {
        "object": "eval.run", "id": run.id, "eval_id": run.eval_id, "name": run.name, "status": run.status,
        "model": run.model, "created_at": run.created_at, "data_source": run.data_source, "metadata": run.run_metadata,
        "error": run.error, "result_counts": run.result_counts,
        "per_testing_criteria_results": run.per_testing_criteria_results, "per_model_usage": run.per_model_usage,
        "report_url": report_url(request, run),
    }  # fmt: skip


def item_to_wire(item: OpenAIEvalOutputItem) -> dict[str, Any]:
    return {"object": "eval.run.output_item", "id": item.id, "run_id": item.run_id, "eval_id": item.eval_id,
            "created_at": item.created_at, "status": item.status, "datasource_item_id": item.datasource_item_id,
            "datasource_item": item.datasource_item, "results": item.results, "sample": item.sample}  # fmt: skip


def page_to_wire(page: Page, shape) -> dict[str, Any]:
    data = [shape(row) for row in page.rows]
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": page.has_more}  # fmt: skip


def _load_eval(session, org: Organization, eval_id: str) -> OpenAIEval:
    row = objects.get_eval(session, org.id, eval_id)
    if row is None:
        raise not_found(f"Eval with id '{eval_id}' not found.", param="eval_id")
    return row


def _load_run(session, org: Organization, eval_id: str, run_id: str) -> OpenAIEvalRun:
    run = objects.get_run(session, org.id, eval_id, run_id)
    if run is None:
        raise not_found(f"Run with id '{run_id}' not found in eval '{eval_id}'.", param="run_id")
    return run


def _cursor(error: UnknownCursor) -> OpenAIError:
    return bad_request(f"No object with id '{error.args[0]}' to list after.", param="after")


# Evals ---------------------------------------------------------------------------------------------------------


@router.post("", status_code=201)  # OpenAI's spec: 201 Created
def create_eval(org: Org, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    try:
        unknown = sorted(set(body) - {"data_source_config", "testing_criteria", "name", "metadata"})
        if unknown:
            raise OpenAIEvalRequestError(f"Unrecognized request argument supplied: {unknown[0]}.", unknown[0])
        for required in ("data_source_config", "testing_criteria"):
            if required not in body:
                raise OpenAIEvalRequestError(f"Missing required parameter: '{required}'.", required)
        config = check_data_source_config(body["data_source_config"])
        criteria = check_testing_criteria(body["testing_criteria"], config)
        name, metadata = check_name(body.get("name")), check_metadata(body.get("metadata"))
    except OpenAIEvalRequestError as error:
        raise _bad(error) from None
    with session_scope() as session:
        row = objects.create_eval(session, org.id, name=name, data_source_config=config,
                                  testing_criteria=criteria, metadata=metadata)  # fmt: skip
        return eval_to_wire(row)


@router.get("")
def list_evals(org: Org, after: str | None = None, limit: Limit = 20, order: Order = "asc",
               order_by: Literal["created_at", "updated_at"] = "created_at") -> dict[str, Any]:
    with session_scope() as session:
        try:
            page = objects.list_evals(session, org.id, after=after, limit=limit, order=order, order_by=order_by)
        except UnknownCursor as error:
            raise _cursor(error) from None
        return page_to_wire(page, eval_to_wire)


@router.get("/{eval_id}")
def retrieve_eval(eval_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        return eval_to_wire(_load_eval(session, org, eval_id))


@router.post("/{eval_id}")
def update_eval(eval_id: str, org: Org, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    try:
        unknown = sorted(set(body) - {"name", "metadata"})
        if unknown:
            raise OpenAIEvalRequestError(f"Only 'name' and 'metadata' can be updated, not '{unknown[0]}'.",
                                         unknown[0])
        name, metadata = check_name(body.get("name")), check_metadata(body.get("metadata"))
    except OpenAIEvalRequestError as error:
        raise _bad(error) from None
    with session_scope() as session:
        row = _load_eval(session, org, eval_id)
        if "name" in body and name is not None:
            row.name = name
        if "metadata" in body:
            row.eval_metadata = metadata
        row.updated_at = int(time.time())
        return eval_to_wire(row)


@router.delete("/{eval_id}")
def delete_eval(eval_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        objects.delete_eval(session, _load_eval(session, org, eval_id))
    return {"object": "eval.deleted", "deleted": True, "eval_id": eval_id}


# Runs ----------------------------------------------------------------------------------------------------------


def _file_rows(session, org: Organization, file_id: Any, param: str) -> list[dict[str, Any]]:
    if not isinstance(file_id, str) or not file_id:
        raise OpenAIEvalRequestError(f"'{param}' must be a file id.", param)
    row = get_file(session, org.id, file_id)
    if row is None:
        raise OpenAIEvalRequestError(f"File {file_id} not found.", param, "file_not_found")
    if row.purpose not in EVAL_FILE_PURPOSES:
        raise OpenAIEvalRequestError(f"File {file_id} has purpose '{row.purpose}'; upload it with purpose 'evals'.",
                                     param)
    return parse_jsonl_rows(BlobStore(get_settings().files_dir).path(row.storage_key), param)


def _check_source(session, org: Organization, source: Any, kind: str) -> list[dict[str, Any]]:
    param = "data_source.source"
    if not isinstance(source, dict):
        raise OpenAIEvalRequestError(f"Missing required parameter: '{param}'.", param)
    source_type = source.get("type")
    if source_type == "file_content":
        content = source.get("content")
        if not isinstance(content, list) or not content:
            raise OpenAIEvalRequestError(f"'{param}.content' must be a non-empty list of {{item, sample?}}.",
                                         f"{param}.content")
        for index, row in enumerate(content):
            if not isinstance(row, dict) or set(row) - {"item", "sample"}:
                raise OpenAIEvalRequestError(f"'{param}.content[{index}]' must be {{item, sample?}}.",
                                             f"{param}.content[{index}]")
        return content
    if source_type == "file_id":
        return _file_rows(session, org, source.get("id"), f"{param}.id")
    if source_type in ("stored_completions", "responses"):
        raise OpenAIEvalRequestError(f"Source type '{source_type}' reads traffic OpenAI logged; openft keeps no such "
                                     "logs. Use file_content or file_id.", f"{param}.type", "unsupported_data_source")
    raise OpenAIEvalRequestError(f"'{param}.type' must be 'file_content' or 'file_id'.", f"{param}.type")


def _check_input_messages(data_source: dict[str, Any]) -> None:
    param = "data_source.input_messages"
    spec = data_source.get("input_messages")
    if not isinstance(spec, dict):
        raise OpenAIEvalRequestError(f"Missing required parameter: '{param}' (a template or an item_reference).",
                                     param)
    if spec.get("type") == "item_reference":
        reference = spec.get("item_reference")
        if not isinstance(reference, str) or not reference.startswith("item."):
            raise OpenAIEvalRequestError(f"'{param}.item_reference' must name a field of the item, e.g. "
                                         "'item.messages'.", f"{param}.item_reference")
        return
    if spec.get("type") != "template":
        raise OpenAIEvalRequestError(f"'{param}.type' must be 'template' or 'item_reference'.", f"{param}.type")
    template = spec.get("template")
    if not isinstance(template, list) or not template:
        raise OpenAIEvalRequestError(f"'{param}.template' must be a non-empty list of messages.", f"{param}.template")
    from openft.graders.spec import GraderSpecError, check_content

    for index, message in enumerate(template):
        where = f"{param}.template[{index}]"
        if not isinstance(message, dict) or message.get("role") not in ("user", "assistant", "system", "developer"):
            raise OpenAIEvalRequestError(f"'{where}.role' must be user, assistant, system or developer.",
                                         f"{where}.role")
        try:
            check_content(message.get("content"), f"{where}.content")
        except GraderSpecError as error:
            raise OpenAIEvalRequestError(error.message, error.param) from None


def check_run_request(session, org: Organization, row: OpenAIEval, body: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(body) - {"data_source", "name", "metadata"})
    if unknown:
        raise OpenAIEvalRequestError(f"Unrecognized request argument supplied: {unknown[0]}.", unknown[0])
    data_source = body.get("data_source")
    if not isinstance(data_source, dict):
        raise OpenAIEvalRequestError("Missing required parameter: 'data_source'.", "data_source")
    kind = data_source.get("type")
    if kind == "responses":
        raise OpenAIEvalRequestError("data_source type 'responses' samples through OpenAI's Responses API, which "
                                     "openft does not serve; use 'completions'.", "data_source.type",
                                     "unsupported_data_source")  # fmt: skip
    if kind not in ("jsonl", "completions"):
        raise OpenAIEvalRequestError("'data_source.type' must be 'jsonl' or 'completions'.", "data_source.type")
    allowed = ("type", "source") if kind == "jsonl" else ("type", "source", "input_messages", "model",
                                                          "sampling_params")
    extra = sorted(set(data_source) - set(allowed))
    if extra:
        raise OpenAIEvalRequestError(f"Unrecognized parameter 'data_source.{extra[0]}' for a {kind} data source.",
                                     f"data_source.{extra[0]}")
    rows = _check_source(session, org, data_source.get("source"), kind)
    schema = row.data_source_config["schema"]["properties"]
    param = "data_source.source.content" if data_source["source"]["type"] == "file_content" else "data_source.source"
    needs_sample = kind == "jsonl" and _criteria_use_sample(row.testing_criteria)
    check_rows(rows, schema["item"], param, needs_sample=needs_sample)
    model = "jsonl"
    if kind == "completions":
        model = data_source.get("model")
        if not isinstance(model, str) or not model:
            raise OpenAIEvalRequestError("Missing required parameter: 'data_source.model'.", "data_source.model")
        try:
            resolve_model(org.id, model)
        except OpenAIError:
            raise OpenAIError(404, f"The model `{model}` does not exist or you do not have access to it.",
                              param="data_source.model", code="model_not_found") from None
        _check_input_messages(data_source)
        check_sampling(data_source.get("sampling_params"))
    return {"data_source": data_source, "model": model, "name": check_name(body.get("name")),
            "metadata": check_metadata(body.get("metadata"))}  # fmt: skip


def _criteria_use_sample(criteria: list[dict[str, Any]]) -> bool:
    from openft.evals.openai_requests import _criterion_variables

    return any(v.startswith("sample.") for c in criteria for v in _criterion_variables(c)) or any(
        c["type"] == "python" for c in criteria
    )


@router.post("/{eval_id}/runs", status_code=201)
def create_run(eval_id: str, org: Org, request: Request, body: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    with session_scope() as session:
        row = _load_eval(session, org, eval_id)
        try:
            checked = check_run_request(session, org, row, body)
        except OpenAIEvalRequestError as error:
            raise _bad(error) from None
        run = objects.create_run(session, row, **checked)
        return run_to_wire(run, request)


@router.get("/{eval_id}/runs")
def list_runs(eval_id: str, org: Org, request: Request, after: str | None = None, limit: Limit = 20,
              order: Order = "asc", status: str | None = None) -> dict[str, Any]:
    if status is not None and status not in RUN_STATUSES:
        raise bad_request(f"Invalid value for 'status': '{status}'. Expected one of {', '.join(RUN_STATUSES)}.",
                          param="status")
    with session_scope() as session:
        _load_eval(session, org, eval_id)
        try:
            page = objects.list_runs(session, org.id, eval_id, after=after, limit=limit, order=order, status=status)
        except UnknownCursor as error:
            raise _cursor(error) from None
        return page_to_wire(page, lambda run: run_to_wire(run, request))


@router.get("/{eval_id}/runs/{run_id}")
def retrieve_run(eval_id: str, run_id: str, org: Org, request: Request) -> dict[str, Any]:
    with session_scope() as session:
        return run_to_wire(_load_run(session, org, eval_id, run_id), request)


def _cancel(eval_id: str, run_id: str, org: Organization, request: Request) -> dict[str, Any]:
    with session_scope() as session:
        run = _load_run(session, org, eval_id, run_id)
        if run.status in objects.FINAL_STATUSES:
            raise bad_request(f"Run {run_id} is already {run.status}; only queued or in_progress runs can be "
                              "canceled.", param="run_id")
        objects.cancel_run(session, run)
        return run_to_wire(run, request)


@router.post("/{eval_id}/runs/{run_id}/cancel")
def cancel_run(eval_id: str, run_id: str, org: Org, request: Request) -> dict[str, Any]:
    return _cancel(eval_id, run_id, org, request)


@router.post("/{eval_id}/runs/{run_id}")
def cancel_run_rest(eval_id: str, run_id: str, org: Org, request: Request) -> dict[str, Any]:
    """OpenAI's REST reference cancels with POST on the run itself; the SDK uses /cancel. Both work."""
    return _cancel(eval_id, run_id, org, request)


@router.delete("/{eval_id}/runs/{run_id}")
def delete_run(eval_id: str, run_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        objects.delete_run(session, _load_run(session, org, eval_id, run_id))
    return {"object": "eval.run.deleted", "deleted": True, "run_id": run_id}


# Output items --------------------------------------------------------------------------------------------------


@router.get("/{eval_id}/runs/{run_id}/output_items")
def list_output_items(eval_id: str, run_id: str, org: Org, after: str | None = None, limit: Limit = 20,
                      order: Order = "asc", status: Literal["pass", "fail", "error"] | None = None) -> dict[str, Any]:
    with session_scope() as session:
        run = _load_run(session, org, eval_id, run_id)
        try:
            page = objects.list_output_items(session, run, after=after, limit=limit, order=order, status=status)
        except UnknownCursor as error:
            raise _cursor(error) from None
        return page_to_wire(page, item_to_wire)


@router.get("/{eval_id}/runs/{run_id}/output_items/{output_item_id}")
def retrieve_output_item(eval_id: str, run_id: str, output_item_id: str, org: Org) -> dict[str, Any]:
    with session_scope() as session:
        run = _load_run(session, org, eval_id, run_id)
        item = objects.get_output_item(session, run, output_item_id)
        if item is None:
            raise not_found(f"Output item with id '{output_item_id}' not found in run '{run_id}'.",
                            param="output_item_id")
        return item_to_wire(item)

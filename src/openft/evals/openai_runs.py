"""Runs of OpenAI's Evals API: for each item, get a sample (from the data source, or by asking a model openft
serves), grade it with every testing criterion, and store an output item; counts and usage are kept on the run
as it goes, so a dashboard or `runs.retrieve` shows progress.

`execute_run(run_id, heartbeat=...)` is a plain function: the queue's runner (`run_from_lease`) calls it in a
worker's child process with a fenced session and a heartbeat; tests call it directly with fakes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select

from openft.config import get_settings
from openft.evals.judge_endpoints import organization_judge
from openft.evals.local_engines import LocalEngines
from openft.evals.openai_objects import FINAL_STATUSES, empty_counts
from openft.evals.openai_requests import default_threshold, parse_jsonl_rows
from openft.graders import GradeResult, Judge, grade
from openft.graders.templates import TemplateError, lookup, render
from openft.jobs.lease import LeaseLost
from openft.store.blobs import BlobStore
from openft.store.db import session_scope
from openft.store.files import get_file
from openft.store.ids import new_id
from openft.store.openai_eval_tables import OpenAIEval, OpenAIEvalOutputItem, OpenAIEvalRun
from openft.store.pagination import new_seq

log = logging.getLogger(__name__)
SessionOpener = Callable[[], AbstractContextManager]
# (model, messages, params) -> OpenAI chat.completion dict
Complete = Callable[[dict[str, Any]], dict[str, Any]]


class RunStopped(Exception):
    """The run was cancelled or deleted while it ran."""


@dataclass
class Tally:
    counts: dict[str, int] = field(default_factory=empty_counts)
    per_criterion: dict[str, dict[str, int]] = field(default_factory=dict)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)

    def add_usage(self, model: str, usage: dict[str, Any], invocations: int = 1) -> None:
        total = self.usage.setdefault(model, dict.fromkeys(
            ("invocation_count", "prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens"), 0))
        prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
        total["invocation_count"] += invocations
        total["prompt_tokens"] += prompt
        total["completion_tokens"] += completion
        total["total_tokens"] += prompt + completion

    def wire(self) -> dict[str, Any]:
        return {
            "result_counts": dict(self.counts),
            "per_testing_criteria_results": [
                {"testing_criteria": name, "passed": c["passed"], "failed": c["failed"]}
                for name, c in self.per_criterion.items()
            ],
            "per_model_usage": [{"model_name": model, **usage} for model, usage in self.usage.items()],
        }


def load_rows(organization_id: str, source: dict[str, Any]) -> list[dict[str, Any]]:
    if source["type"] == "file_content":
        return [{"item": row["item"], "sample": row.get("sample")} for row in source["content"]]
    with session_scope() as session:
        row = get_file(session, organization_id, source["id"])
        if row is None:
            raise FileNotFoundError(f"file {source['id']} was deleted before the run started")
        path = BlobStore(get_settings().files_dir).path(row.storage_key)
    return parse_jsonl_rows(path, "data_source.source.id")


def _content_text(content: Any, item: dict[str, Any]) -> str:
    parts = content if isinstance(content, list) else [content]
    return "".join(render(p if isinstance(p, str) else p.get("text", ""), {"item": item}) for p in parts)


def input_messages(data_source: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    spec = data_source["input_messages"]
    if spec["type"] == "item_reference":
        messages = lookup(spec["item_reference"], {"item": item})
        return [{"role": m["role"], "content": m.get("content") or ""} for m in messages]
    return [
        {"role": "system" if m["role"] == "developer" else m["role"], "content": _content_text(m["content"], item)}
        for m in spec["template"]
    ]


def _sample_params(data_source: dict[str, Any]) -> dict[str, Any]:
    params = data_source.get("sampling_params") or {}
    return {"max_completion_tokens": params.get("max_completion_tokens") or 256,
            "seed": params.get("seed") if params.get("seed") is not None else 42,
            "temperature": params.get("temperature") if params.get("temperature") is not None else 1.0,
            "top_p": params.get("top_p") if params.get("top_p") is not None else 1.0}  # fmt: skip


def sample_for(data_source: dict[str, Any], row: dict[str, Any], complete: Complete | None,
               tally: Tally) -> tuple[str, dict[str, Any]]:
    """(output text, OpenAI's output-item `sample` object) for one row."""
    params = _sample_params(data_source)
    base = {"error": None, "finish_reason": "stop", "input": [],
            "max_completion_tokens": params["max_completion_tokens"], "model": data_source.get("model") or "",
            "output": [], "seed": params["seed"],
            "temperature": params["temperature"], "top_p": params["top_p"],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0, "cached_tokens": 0}}  # fmt: skip
    if data_source["type"] == "jsonl":
        given = row.get("sample") or {}
        text = given.get("output_text") or ""
        return text, {**base, "model": given.get("model") or "", "output": [{"role": "assistant", "content": text}]}
    try:
        messages = input_messages(data_source, row["item"])
    except (TemplateError, KeyError, TypeError) as exc:  # e.g. an item without the referenced messages
        return "", {**base, "error": {"code": "invalid_input_messages", "message": str(exc)[:1000]}}
    body = {"model": data_source["model"], "messages": messages, "max_tokens": params["max_completion_tokens"],
            "seed": params["seed"], "temperature": params["temperature"], "top_p": params["top_p"]}  # fmt: skip
    response_format = (data_source.get("sampling_params") or {}).get("response_format")
    if response_format and response_format.get("type") in ("json_object", "json_schema"):
        body["response_format"] = response_format
    base["input"] = messages
    try:
        completion = complete(body)
    except Exception as exc:  # noqa: BLE001 - one failed sample is an errored item, not a failed run
        return "", {**base, "error": {"code": "sampling_error", "message": f"{type(exc).__name__}: {exc}"[:1000]}}
    choice = (completion.get("choices") or [{}])[0]
    text = (choice.get("message") or {}).get("content") or ""
    usage = completion.get("usage") or {}
    tally.add_usage(data_source["model"], usage)
    prompt, completion_tokens = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    return text, {**base, "finish_reason": choice.get("finish_reason") or "stop",
                  "output": [{"role": "assistant", "content": text}],
                  "usage": {"prompt_tokens": prompt, "completion_tokens": completion_tokens,
                            "total_tokens": prompt + completion_tokens, "cached_tokens": 0}}  # fmt: skip


def criterion_result(criterion: dict[str, Any], result: GradeResult) -> dict[str, Any]:
    passed = not result.errored and result.reward >= default_threshold(criterion)
    return {"name": criterion["name"], "type": criterion["type"], "score": result.reward, "passed": passed,
            "sample": None, "reason": result.reason, "errored": result.errored,
            "metadata": {"errors": result.errors, "execution_time": round(result.execution_time, 6),
                         "label": result.passed_label}}  # fmt: skip


def grade_row(criteria: list[dict[str, Any]], text: str, item: dict[str, Any], sample: dict[str, Any],
              tally: Tally, judge: Judge | None, embedder=None) -> tuple[list[dict[str, Any]], str]:
    results: list[dict[str, Any]] = []
    for criterion in criteria:
        spec = {k: v for k, v in criterion.items() if k != "pass_threshold"}
        graded = grade(spec, text, item, judge=judge, embedder=embedder)
        for model, usage in graded.usage_per_model.items():
            tally.add_usage(model, usage, usage.get("invocation_count", 1))
        results.append(criterion_result(criterion, graded))
    if sample.get("error") or any(r["errored"] for r in results):
        status = "error"
    else:
        status = "pass" if all(r["passed"] for r in results) else "fail"
    tally.counts["total"] += 1
    tally.counts[{"pass": "passed", "fail": "failed", "error": "errored"}[status]] += 1
    for result in results:
        counts = tally.per_criterion.setdefault(result["name"], {"passed": 0, "failed": 0})
        counts["passed" if result["passed"] else "failed"] += 1
    return results, status


def execute_run(
    run_id: str,
    *,
    open_session: SessionOpener = session_scope,
    heartbeat: Callable[[], bool] = lambda: False,
    complete: Complete | None = None,
    judge: Judge | None = None,
    embedder=None,
) -> str:
    """Run one eval run to its end; returns the final status. `heartbeat()` is called after every item and
    returns True to stop (the lease was lost); a cancel or delete through the API also stops it."""
    with open_session() as session:
        run = session.get(OpenAIEvalRun, run_id)
        if run is None or run.status in FINAL_STATUSES:
            return run.status if run is not None else "deleted"
        evaluation = session.get(OpenAIEval, run.eval_id)
        run.status, run.started_at, run.heartbeat_at = "in_progress", int(time.time()), time.time()
        run.result_counts, run.per_testing_criteria_results, run.per_model_usage = empty_counts(), [], []
        session.execute(OpenAIEvalOutputItem.__table__.delete().where(OpenAIEvalOutputItem.run_id == run_id))
        organization_id, eval_id = run.organization_id, run.eval_id
        data_source, criteria = dict(run.data_source), list(evaluation.testing_criteria)
    engines = None
    if complete is None or judge is None:
        engines = LocalEngines(organization_id)
        complete = complete or engines.complete
        judge = judge or organization_judge(organization_id, engines.complete)
    tally = Tally()
    try:
        rows = load_rows(organization_id, data_source["source"])
        for index, row in enumerate(rows):
            text, sample = sample_for(data_source, row, complete, tally)
            results, status = grade_row(criteria, text, row["item"], sample, tally, judge, embedder)
            _store_item(open_session, run_id, eval_id, organization_id, index, row["item"], results, sample, status,
                        tally)
            if heartbeat():
                raise RunStopped("lease lost")
        return _finish(open_session, run_id, "completed", tally)
    except RunStopped:
        log.info("eval run %s stopped", run_id)
        return "canceled"
    except LeaseLost:
        raise  # another worker holds the run now, or it was withdrawn: write nothing more
    except Exception as exc:  # noqa: BLE001 - recorded on the run for the user to see
        log.exception("eval run %s failed", run_id)
        message = f"{type(exc).__name__}: {exc}"[:2000]
        return _finish(open_session, run_id, "failed", tally, {"code": "run_failed", "message": message})
    finally:
        if engines is not None:
            engines.close()


def _store_item(open_session, run_id, eval_id, organization_id, index, item, results, sample, status, tally) -> None:
    with open_session() as session:
        run = session.get(OpenAIEvalRun, run_id)
        if run is None or run.status != "in_progress":
            raise RunStopped(f"run is {run.status if run else 'deleted'}")
        session.add(OpenAIEvalOutputItem(
            id=new_id("outputitem_"), seq=new_seq(), run_id=run_id, eval_id=eval_id, organization_id=organization_id,
            datasource_item_id=index, datasource_item=item, results=results, sample=sample, status=status,
            created_at=int(time.time()),
        ))  # fmt: skip
        _apply(run, tally)


def _finish(open_session, run_id: str, status: str, tally: Tally, error: dict[str, str] | None = None) -> str:
    with open_session() as session:
        run = session.get(OpenAIEvalRun, run_id)
        if run is None or run.status != "in_progress":
            return run.status if run is not None else "deleted"
        run.status, run.error, run.finished_at = status, error, int(time.time())
        _apply(run, tally)
    return status


def _apply(run: OpenAIEvalRun, tally: Tally) -> None:
    wire = tally.wire()
    run.result_counts, run.per_model_usage = wire["result_counts"], wire["per_model_usage"]
    run.per_testing_criteria_results, run.heartbeat_at = wire["per_testing_criteria_results"], time.time()


# The queue's runner ------------------------------------------------------------------------------------------


def run_from_lease(lease) -> int:
    """The `openai_eval_run` queue kind's runner (in the worker's child process): fenced writes, lease checks."""
    def still_held() -> bool:
        try:
            with lease.session() as session:
                session.execute(select(OpenAIEvalRun.id).where(OpenAIEvalRun.id == lease.subject_id))
            return False
        except LeaseLost:
            return True

    status = execute_run(lease.subject_id, open_session=lease.session, heartbeat=still_held)
    try:
        with lease.session() as session:
            lease.finish(session)
    except LeaseLost:
        pass
    log.info("eval run %s ended: %s", lease.subject_id, status)
    return 0


def run_crashed(lease, session, exit_code: int) -> None:
    """The child died without finishing (killed, out of memory): the run fails with the reason."""
    run = session.get(OpenAIEvalRun, lease.subject_id)
    if run is not None and run.status in ("queued", "in_progress"):
        run.status, run.finished_at = "failed", int(time.time())
        run.error = {"code": "worker_crashed", "message": f"The worker running this eval exited with code {exit_code}."}

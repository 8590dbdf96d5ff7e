"""The `distillation` queue kind's runner (in a worker's child process).

1. Every prompt is looked up in the teacher cache; only the others go to the teacher, `concurrency` at a time,
   each answer stored (a fenced write) the moment it arrives. A job taken over after its worker died, or a
   rerun of the same prompts, therefore never pays twice for one prompt.
2. Answers pass the filter (rules, then an optional grader); dropped and failed prompts are reported by line.
3. The kept conversations are written as a training file (purpose fine-tune), validated against the student's
   tokenizer like an upload; a line the validator refuses is dropped with its reason and the file written again.

The teacher's tokens and their cost (at its price, openft.pricing) are written to the job as they grow.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

from openft.config import get_settings
from openft.evals.distill import cache
from openft.evals.distill.filters import AnswerFilter, Verdict
from openft.evals.distill.objects import FINAL_STATUSES
from openft.evals.distill.output import build_report, validated_output
from openft.evals.distill.prompts import Prompt, PromptFileError, read_prompts
from openft.evals.distill.teacher import (
    LocalTeacher,
    PromptFailed,
    RemoteTeacher,
    RetryPolicy,
    TeacherFatal,
    TeacherReply,
)
from openft.jobs.lease import Lease, LeaseLost
from openft.store.blobs import BlobStore, storage_errors
from openft.store.distill_tables import Distillation
from openft.store.files import add_file, get_file
from openft.store.ids import new_id
from openft.store.quotas import QuotaExceeded, check_storage

log = logging.getLogger(__name__)
FLUSH_EVERY_S = 1.0
MAX_LISTED = 10_000  # dropped / failed lines listed in the report (all are counted)


class Stopped(Exception):
    """The distillation was cancelled while it ran."""


class JobFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code, self.message = code, message


def request_body(config: dict[str, Any], prompt: Prompt) -> dict[str, Any]:
    """What the teacher is sent (and what the cache is keyed by, with the teacher's address)."""
    body: dict[str, Any] = {"model": config["teacher"]["model"], "messages": prompt.messages, **prompt.context,
                            "max_completion_tokens": config["max_completion_tokens"]}  # fmt: skip
    for name in ("temperature", "top_p", "seed"):
        if config.get(name) is not None:
            body[name] = config[name]
    return body


class Tally:
    """The teacher's tokens and cost, over every attempt of this job (answers it paid for) plus this attempt's
    request counts; shown on the job as `usage` while it runs."""

    def __init__(self, config: dict[str, Any], previous: dict[str, Any] | None) -> None:
        from openft.pricing import UnknownModelPrice, lookup_inference_price

        teacher = config["teacher"]
        self.price_model = teacher.get("price_model") or (teacher["model"] if teacher.get("base_url") else None)
        self.price, self.note = None, None
        if self.price_model is None:
            self.note = "served by openft: no per-token price (set teacher.price_model to price it as a hosted model)"
        else:
            try:
                self.price = lookup_inference_price(self.price_model)
            except UnknownModelPrice as exc:
                self.note = str(exc)
        previous = previous or {}
        self.earlier_requests = int(previous.get("teacher_requests") or 0)
        self.earlier_retries = int(previous.get("retries") or 0)
        self.paid = self.prompt_tokens = self.completion_tokens = self.from_cache = 0
        self.cost = Decimal(0)

    def add_paid(self, prompt_tokens: int, completion_tokens: int) -> None:
        from openft.pricing import inference_cost

        self.paid += 1
        self.prompt_tokens += prompt_tokens
        self.completion_tokens += completion_tokens
        if self.price is not None:
            self.cost += inference_cost(self.price_model, prompt_tokens, completion_tokens)

    def wire(self, stats) -> dict[str, Any]:
        return {
            "teacher_requests": self.earlier_requests + stats.requests,
            "retries": self.earlier_retries + stats.retries, "failures_by_status": dict(stats.statuses),
            "answers_paid": self.paid, "answers_from_cache": self.from_cache,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "cost_usd": float(self.cost) if self.price is not None else None,
            "price": None if self.price is None else {
                "model": self.price_model, "input_per_1m": float(self.price.input_per_1m),
                "output_per_1m": float(self.price.output_per_1m), "source": self.price.source},
            "price_note": self.note,
        }  # fmt: skip


class Distiller:
    def __init__(self, lease: Lease, organization_id: str, config: dict[str, Any], previous_usage: dict | None,
                 teacher_factory: Callable[[], Any] | None = None) -> None:  # fmt: skip
        self.lease, self.id, self.organization_id, self.config = lease, lease.subject_id, organization_id, config
        self.teacher_factory = teacher_factory
        self.tally = Tally(config, previous_usage)
        self.progress: dict[str, Any] = {}
        self.verdicts_from_cache = 0  # grader verdicts reused from earlier attempts or jobs (no judge call)
        self.last_flush = 0.0

    # --- teacher ---------------------------------------------------------------------------------------------
    def _teacher(self):
        if self.teacher_factory is not None:
            return self.teacher_factory()
        teacher = self.config["teacher"]
        if not teacher.get("base_url"):
            return LocalTeacher(self.organization_id)
        from openft.evals.requests import endpoint_api_key

        policy = RetryPolicy(max_attempts=self.config["max_attempts"], timeout_s=float(self.config["request_timeout"]))
        return RemoteTeacher(teacher["base_url"], endpoint_api_key(teacher, "teacher"), policy)

    # --- the fenced writes -------------------------------------------------------------------------------------
    def _store(self, key: str, reply: TeacherReply) -> None:
        with self.lease.session() as session:
            cache.store(session, self.organization_id, key, reply, self.id)

    def _store_verdict(self, key: str, answer_key: str, verdict: Verdict) -> None:
        with self.lease.session() as session:
            cache.store_verdict(session, self.organization_id, key, answer_key, verdict, self.id)

    def _flush(self, stats, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self.last_flush < FLUSH_EVERY_S:
            return
        self.last_flush = now
        with self.lease.session() as session:
            row = session.get(Distillation, self.id)
            if row is None or row.status != "running":
                raise Stopped(f"distillation is {row.status if row else 'deleted'}")
            row.progress, row.usage, row.heartbeat_at = dict(self.progress), self.tally.wire(stats), time.time()

    # --- the phases ----------------------------------------------------------------------------------------------
    async def answer_all(self, prompts: list[Prompt]) -> tuple[dict[str, TeacherReply], dict[str, str], Any]:
        bodies = {p.line: request_body(self.config, p) for p in prompts}
        keys = {line: cache.cache_key(self.config["teacher"], body) for line, body in bodies.items()}
        with self.lease.session() as session:
            replies = cache.lookup(session, self.organization_id, sorted(set(keys.values())))
            for prompt_tokens, completion_tokens in cache.paid_answers(session, self.id):
                self.tally.add_paid(prompt_tokens, completion_tokens)  # earlier attempts of this job
        self.tally.from_cache = max(len(replies) - self.tally.paid, 0)  # answers other jobs paid for
        pending = {keys[p.line]: bodies[p.line] for p in prompts if keys[p.line] not in replies}  # duplicates once
        failures: dict[str, str] = {}
        self.progress.update(answered=len(replies), from_cache=self.tally.from_cache)
        teacher = self._teacher()
        limit = asyncio.Semaphore(int(self.config["concurrency"]))

        async def one(key: str, body: dict[str, Any]) -> None:
            async with limit:
                try:
                    reply = await teacher.answer(body)
                except PromptFailed as exc:
                    failures[key] = str(exc)
                    self.progress["failed"] = len(failures)
                    return
            await asyncio.to_thread(self._store, key, reply)
            replies[key] = reply
            self.tally.add_paid(reply.prompt_tokens, reply.completion_tokens)
            self.progress["answered"] = len(replies)

        async def tick() -> None:
            """Progress, usage and a cancel check every second, also while every request waits on the teacher."""
            while True:
                await asyncio.sleep(FLUSH_EVERY_S)
                await asyncio.to_thread(self._flush, teacher.stats, True)

        tasks = [asyncio.ensure_future(one(key, body)) for key, body in pending.items()]
        ticker = asyncio.ensure_future(tick())
        try:
            answered = asyncio.gather(*tasks)
            await asyncio.wait({answered, ticker}, return_when=asyncio.FIRST_COMPLETED)
            if ticker.done():
                ticker.result()  # raises Stopped or LeaseLost: the rest is cancelled below
            answered.result()
        finally:
            for task in (*tasks, ticker):
                task.cancel()
            await asyncio.gather(*tasks, ticker, return_exceptions=True)
            await teacher.close()
        by_line = {line: replies[key] for line, key in keys.items() if key in replies}
        failed = {line: failures[key] for line, key in keys.items() if key in failures}
        return by_line, failed, teacher.stats

    async def judge_all(self, prompts: list[Prompt], replies: dict[int, TeacherReply]) -> dict[int, Verdict]:
        """Every answer's verdict. With a grader, verdicts it made before (this job's earlier attempt, or an
        earlier job with the same filter) come from the cache, and each new one is stored as it is made."""
        engines: dict[str, LocalTeacher] = {}
        answer_filter = AnswerFilter(self.config.get("filter"), self._judge(engines))
        limit = asyncio.Semaphore(int(self.config["concurrency"]))
        answered = [p for p in prompts if p.line in replies]
        keys: dict[int, str] = {}
        if answer_filter.grader is not None:
            keys = {p.line: cache.verdict_key(answer_filter.spec, p.item, replies[p.line]) for p in answered}
        with self.lease.session() as session:
            known = cache.lookup_verdicts(session, self.organization_id, sorted(set(keys.values())))
        self.verdicts_from_cache = sum(1 for key in keys.values() if key in known)
        made: dict[str, asyncio.Future] = {}  # identical prompt lines with the same answer are judged once

        async def judge(prompt: Prompt, key: str | None) -> Verdict:
            async with limit:
                verdict = await asyncio.to_thread(answer_filter.check, prompt, replies[prompt.line])
            if key is not None and verdict.rule in (None, "grader"):  # a grader's verdict; never a failed grading
                answer_key = cache.cache_key(self.config["teacher"], request_body(self.config, prompt))
                await asyncio.to_thread(self._store_verdict, key, answer_key, verdict)
            return verdict

        async def one(prompt: Prompt) -> tuple[int, Verdict]:
            key = keys.get(prompt.line)
            if key in known:
                return prompt.line, known[key]
            if key is None:
                return prompt.line, await judge(prompt, None)
            if key not in made:
                made[key] = asyncio.ensure_future(judge(prompt, key))
            return prompt.line, await made[key]

        try:
            return dict(await asyncio.gather(*(one(p) for p in answered)))
        finally:
            for future in made.values():
                future.cancel()
            for local in engines.values():
                await local.close()

    def _judge(self, engines: dict[str, LocalTeacher]):
        """A judge for model graders: the organization's registered endpoint, else a model openft serves."""
        spec = (self.config.get("filter") or {}).get("grader")
        if spec is None or not needs_judge(spec):
            return None
        from openft.evals.judge_endpoints import organization_judge

        loop = asyncio.get_running_loop()

        def local_complete(body: dict[str, Any]) -> dict[str, Any]:  # called from grading threads
            if "local" not in engines:
                engines["local"] = LocalTeacher(self.organization_id)
            future = asyncio.run_coroutine_threadsafe(engines["local"].backend.chat_completion(body), loop)
            return future.result()

        return organization_judge(self.organization_id, local_complete)


def needs_judge(spec: dict[str, Any]) -> bool:
    from openft.graders.spec import sub_graders

    if spec.get("type") in ("score_model", "label_model"):
        return True
    return any(needs_judge(sub) for sub in (sub_graders(spec) or {}).values())


def _input_path(organization_id: str, file_id: str) -> tuple[Path, str]:
    from openft.store.db import session_scope

    with session_scope() as session:
        row = get_file(session, organization_id, file_id)
        if row is None:
            raise JobFailed("input_file_deleted", f"The prompt file {file_id} was deleted before the job ran.")
        return BlobStore(get_settings().files_dir).path(row.storage_key), row.filename


def distill(lease: Lease, organization_id: str, config: dict[str, Any], previous_usage: dict | None,
            teacher_factory: Callable[[], Any] | None = None) -> None:  # fmt: skip
    """Run one distillation to its end, writing through the lease; JobFailed / Stopped / LeaseLost end it early."""
    path, filename = _input_path(organization_id, config["input_file"])
    try:
        prompts = read_prompts(path)
    except PromptFileError as exc:
        raise JobFailed("invalid_prompt_file", str(exc)) from None
    job = Distiller(lease, organization_id, config, previous_usage, teacher_factory)
    job.progress = {"total": len(prompts), "answered": 0, "from_cache": 0, "failed": 0, "kept": 0, "dropped": 0}
    replies, failed, stats = asyncio.run(job.answer_all(prompts))
    verdicts = asyncio.run(job.judge_all(prompts, replies))
    kept = [(p, replies[p.line]) for p in prompts if p.line in verdicts and verdicts[p.line].keep]
    dropped = {line: v for line, v in verdicts.items() if not v.keep}
    job.progress.update(kept=len(kept), dropped=len(dropped))
    job._flush(stats, force=True)
    blobs = BlobStore(get_settings().files_dir)
    blobs.ensure_root()
    key = new_id("blob_", 32)
    partial = blobs.partial_path(key)
    try:
        outcome = None
        if kept:
            kept, outcome = validated_output(partial, kept, config["model"], dropped)
        job.progress.update(kept=len(kept), dropped=len(dropped))
        report = build_report(prompts, kept, dropped, failed, config.get("filter"))
        report["verdicts_from_cache"] = job.verdicts_from_cache
        if not kept:
            _finish(lease, "failed", job, stats, report=report, error={
                "code": "nothing_kept", "message": f"No answer was kept: {len(failed)} prompts failed and "
                f"{len(dropped)} answers were dropped (see the report).", "param": None})  # fmt: skip
            return
        stem = filename[: -len(".jsonl")] if filename.endswith(".jsonl") else filename
        with lease.session() as session:
            size = partial.stat().st_size
            check_storage(session, organization_id, size)
            with storage_errors("store the distilled training file", "Nothing was stored."):
                blobs.commit(partial, key)
            row = add_file(session, file_id=new_id("file-"), organization_id=organization_id,
                           filename=f"{stem}.distilled.jsonl", purpose="fine-tune", size=size, storage_key=key,
                           status=outcome.status, status_details=outcome.status_details, validation=outcome.report)
            error = None
            if outcome.status != "processed":
                error = {"code": "invalid_output", "message": f"The distilled file {row.id} did not pass validation: "
                         f"{outcome.status_details}", "param": None}  # fmt: skip
            _write_final(session, lease, "failed" if error else "succeeded", job, stats, report=report,
                         error=error, output_file=row.id)
    finally:
        partial.unlink(missing_ok=True)


def _write_final(session, lease: Lease, status: str, job: Distiller, stats, **values: Any) -> None:
    row = session.get(Distillation, lease.subject_id)
    if row is not None and row.status == "running":
        row.status, row.finished_at, row.worker_id = status, int(time.time()), None
        row.progress, row.usage, row.heartbeat_at = dict(job.progress), job.tally.wire(stats), time.time()
        for name, value in values.items():
            setattr(row, name, value)
    lease.finish(session)


def _finish(lease: Lease, status: str, job: Distiller | None, stats=None, **values: Any) -> None:
    with lease.session() as session:
        if job is None:
            row = session.get(Distillation, lease.subject_id)
            if row is not None and row.status == "running":
                row.status, row.finished_at, row.worker_id = status, int(time.time()), None
                for name, value in values.items():
                    setattr(row, name, value)
            lease.finish(session)
        else:
            _write_final(session, lease, status, job, stats, **values)


def run_from_lease(lease: Lease, teacher_factory: Callable[[], Any] | None = None) -> int:
    """The `distillation` runner: resumes where an earlier attempt stopped (answers come from the cache)."""
    with lease.session() as session:
        row = session.get(Distillation, lease.subject_id)
        if row is None or row.status in FINAL_STATUSES:
            lease.finish(session)
            return 0
        row.status, row.worker_id, row.heartbeat_at = "running", lease.holder, time.time()
        row.started_at = row.started_at or int(time.time())
        organization_id, config, previous = row.organization_id, dict(row.config), row.usage
    if lease.previous_owner:
        log.warning("distillation %s taken over from %s; resuming from the cache", lease.subject_id,
                    lease.previous_owner)  # fmt: skip
    try:
        distill(lease, organization_id, config, previous, teacher_factory)
    except Stopped:
        log.info("distillation %s cancelled", lease.subject_id)
    except LeaseLost:
        raise
    except (JobFailed, QuotaExceeded) as exc:
        code = exc.code if isinstance(exc, JobFailed) else "storage_quota_exceeded"
        _finish(lease, "failed", None, error={"code": code, "message": exc.message, "param": None})
    except Exception as exc:  # noqa: BLE001 - recorded on the job for the user to see
        log.exception("distillation %s failed", lease.subject_id)
        code = "teacher_refused" if isinstance(exc, TeacherFatal) else "distillation_failed"
        _finish(lease, "failed", None, error={"code": code, "message": f"{exc}"[:2000], "param": None})
    return 0


def run_crashed(lease: Lease, session, exit_code: int) -> None:
    """The child died without finishing (killed, out of memory). Paid answers stay in the cache: a new
    distillation of the same prompts reuses them."""
    row = session.get(Distillation, lease.subject_id)
    if row is not None and row.status in ("queued", "running"):
        row.status, row.finished_at, row.worker_id = "failed", int(time.time()), None
        row.error = {"code": "distillation_process_died", "param": None, "message": (
            f"The distillation process exited unexpectedly (exit code {exit_code}). Answers already received are "
            "cached: create the distillation again and they are not paid for twice.")}  # fmt: skip

"""Teacher answers kept in the database, keyed by (teacher, model, prompt, sampling parameters), per organization.

A distillation looks every prompt up before calling the teacher and stores each answer the moment it arrives
(a fenced write), so a rerun, or a job resumed after its worker died, pays only for prompts never answered.
Each entry records the distillation that paid for it: that job's tally is the sum of its entries.

Beside the answers sit the filter's verdicts on them (table `distillation_verdicts`), keyed by the filter spec,
the prompt line a grader reads and the answer: a rerun with the same filter makes no judge calls either.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from openft.evals.distill.filters import Verdict
from openft.evals.distill.teacher import TeacherReply
from openft.store.distill_tables import FilterVerdict, TeacherAnswer


def teacher_identity(teacher: dict[str, Any]) -> str:
    """Where answers come from: the endpoint's URL (normalised), or openft's own models."""
    base_url = teacher.get("base_url")
    return base_url.rstrip("/").lower() if base_url else "openft"


def _digest(value: dict[str, Any]) -> str:
    canonical = json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _rows_by_key(session: Session, table, key_column, organization_id: str, keys: list[str]):
    for start in range(0, len(keys), 500):  # bounded IN lists
        yield from session.scalars(select(table).where(
            table.organization_id == organization_id, key_column.in_(keys[start:start + 500])))


def cache_key(teacher: dict[str, Any], body: dict[str, Any]) -> str:
    """sha256 of the teacher and the exact request body (model, messages, tools, sampling parameters)."""
    return _digest({"teacher": teacher_identity(teacher), "request": body})


def lookup(session: Session, organization_id: str, keys: list[str]) -> dict[str, TeacherReply]:
    return {row.cache_key: TeacherReply(row.message, row.finish_reason, row.prompt_tokens, row.completion_tokens)
            for row in _rows_by_key(session, TeacherAnswer, TeacherAnswer.cache_key, organization_id, keys)}


def store(session: Session, organization_id: str, key: str, reply: TeacherReply, paid_by: str) -> None:
    """Keep an answer; one already stored under the key (another job got there first) is left as it is."""
    try:
        with session.begin_nested():
            session.add(TeacherAnswer(
                organization_id=organization_id, cache_key=key, message=reply.message,
                finish_reason=reply.finish_reason, prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens, paid_by=paid_by, created_at=int(time.time()),
            ))  # fmt: skip
    except IntegrityError:
        pass


def paid_tokens(session: Session, distillation_id: str) -> tuple[int, int, int]:
    """(answers, prompt tokens, completion tokens) this distillation paid for, over all its attempts."""
    row = session.execute(
        select(func.count(), func.coalesce(func.sum(TeacherAnswer.prompt_tokens), 0),
               func.coalesce(func.sum(TeacherAnswer.completion_tokens), 0))
        .where(TeacherAnswer.paid_by == distillation_id)
    ).one()  # fmt: skip
    return int(row[0]), int(row[1]), int(row[2])


def paid_answers(session: Session, distillation_id: str) -> list[tuple[int, int]]:
    """(prompt, completion) tokens of each answer this distillation paid for (priced call by call)."""
    stmt = select(TeacherAnswer.prompt_tokens, TeacherAnswer.completion_tokens).where(
        TeacherAnswer.paid_by == distillation_id)
    return [(int(p), int(c)) for p, c in session.execute(stmt)]


def verdict_key(filter_spec: dict[str, Any], item: dict[str, Any], reply: TeacherReply) -> str:
    """sha256 of what a verdict depends on: the whole filter (rules, grader, threshold), the prompt line the
    grader reads as `item`, and the answer itself (two jobs racing on one prompt may hold different answers)."""
    return _digest({"filter": filter_spec, "item": item, "answer": reply.message,
                    "finish_reason": reply.finish_reason})


def lookup_verdicts(session: Session, organization_id: str, keys: list[str]) -> dict[str, Verdict]:
    return {row.verdict_key: Verdict(row.keep, row.rule, row.reason, row.score)
            for row in _rows_by_key(session, FilterVerdict, FilterVerdict.verdict_key, organization_id, keys)}


def store_verdict(session: Session, organization_id: str, key: str, answer_key: str, verdict: Verdict,
                  judged_by: str) -> None:  # fmt: skip
    """Keep a grader's verdict; one already stored under the key is left as it is."""
    try:
        with session.begin_nested():
            session.add(FilterVerdict(
                organization_id=organization_id, verdict_key=key, answer_key=answer_key, keep=verdict.keep,
                rule=verdict.rule, reason=verdict.reason, score=verdict.score, judged_by=judged_by,
                created_at=int(time.time()),
            ))  # fmt: skip
    except IntegrityError:
        pass

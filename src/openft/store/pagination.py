"""Cursor pagination the way OpenAI's SDK drives it: ``after=<id of the last item seen>``.

Rows are ordered by ``(seq, id)``, where ``seq`` is the insertion time in nanoseconds, so rows
created within the same second still come back in a stable order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Select, tuple_
from sqlalchemy.orm import Session


class UnknownCursor(LookupError):
    """``after`` names no row visible to the caller."""


@dataclass
class Page:
    rows: list[Any]
    has_more: bool


def new_seq() -> int:
    return time.time_ns()


def paginate(
    session: Session,
    stmt: Select,
    model: Any,
    *,
    after: str | None,
    limit: int,
    order: Literal["asc", "desc"] = "desc",
) -> Page:
    """``stmt`` selects ``model`` rows already filtered to what the caller may see; ``model`` has ``id`` and ``seq``."""
    key = tuple_(model.seq, model.id)
    if after is not None:
        cursor_seq = session.scalar(stmt.with_only_columns(model.seq).where(model.id == after))
        if cursor_seq is None:
            raise UnknownCursor(after)
        cursor = tuple_(cursor_seq, after)
        stmt = stmt.where(key < cursor if order == "desc" else key > cursor)
    if order == "desc":
        stmt = stmt.order_by(model.seq.desc(), model.id.desc())
    else:
        stmt = stmt.order_by(model.seq.asc(), model.id.asc())
    rows = list(session.scalars(stmt.limit(limit + 1)))
    return Page(rows=rows[:limit], has_more=len(rows) > limit)

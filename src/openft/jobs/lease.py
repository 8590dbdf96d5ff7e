"""A lease on one queue task, and the fenced sessions every runner writes through.

A fenced session first re-checks, inside its own transaction, that the task still carries this lease's
token, is still leased and has not expired by the database's clock. That check is an UPDATE of the task
row, so it holds the row's lock (SQLite: the database's write lock) until the transaction commits: a
claim that takes the task over waits for it, and nothing written under an old token lands afterwards.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from openft.jobs.clock import db_now
from openft.store.db import session_factory
from openft.store.queue_tables import QueueTask


class LeaseLost(RuntimeError):
    """The task was taken over, withdrawn (cancel, pause), or its lease expired: stop, write nothing."""


@dataclass(frozen=True)
class Lease:
    task_id: str
    kind: str
    subject_id: str
    token: int  # the fencing token: grows by one on every claim of the task
    owner: str  # the worker holding the lease
    previous_owner: str | None = None  # set when this claim took over another worker's expired lease

    def holds_clause(self) -> tuple:
        return (
            QueueTask.id == self.task_id,
            QueueTask.lease_token == self.token,
            QueueTask.state == "leased",
            QueueTask.lease_expires_at > db_now(),
        )

    @property
    def holder(self) -> str:
        """Who holds the subject, as written on job rows: the worker and the token, e.g. ``host-12-ab#3``."""
        return f"{self.owner}#{self.token}"

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> Lease:
        return cls(**json.loads(raw))

    def check(self, session: Session) -> None:
        """Lock the task row for this transaction if the lease holds; raise LeaseLost otherwise."""
        result = session.execute(
            update(QueueTask).where(*self.holds_clause()).values(lease_token=QueueTask.lease_token)
        )
        if result.rowcount != 1:
            raise LeaseLost(f"lease {self.token} on task {self.task_id} lost: no longer held by {self.owner}")

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction whose writes apply only while this lease holds (raises LeaseLost otherwise)."""
        session = session_factory()()
        session.info["lease_token"] = self.token
        try:
            self.check(session)
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()

    def finish(self, session: Session, state: str = "done") -> None:
        """Mark the task finished inside a fenced session (with the runner's final writes)."""
        session.execute(
            update(QueueTask).where(QueueTask.id == self.task_id, QueueTask.lease_token == self.token)
            .values(state=state, finished_at=time.time())
        )

"""The work queue under concurrent workers: each task is leased by exactly one of them, on either database."""

from __future__ import annotations

import threading
import time

from sqlalchemy import select, update

from openft.jobs import queue
from openft.jobs.clock import db_now
from openft.jobs.settings import QueueSettings
from openft.store.accounts import get_or_create_organization
from openft.store.db import session_scope, upgrade_database
from openft.store.queue_tables import QueueTask

SETTINGS = QueueSettings(lease_seconds=30, max_per_organization=0)


def make_tasks(org_name: str, count: int, kind: str = "test.kind") -> list[str]:
    with session_scope() as session:
        org_id = get_or_create_organization(session, org_name).id
        return [queue.enqueue(session, kind, f"subject-{org_name}-{i:03d}", org_id).subject_id for i in range(count)]


def test_each_task_is_leased_by_exactly_one_of_many_workers(openft_home):
    upgrade_database()
    subjects = make_tasks("queue", 20)
    claims: dict[str, list[str]] = {}
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(name: str) -> None:
        start.wait()
        while True:
            with session_scope() as session:
                lease = queue.claim(session, name, ["test.kind"], SETTINGS)
            if lease is None:
                return
            with lock:
                claims.setdefault(lease.subject_id, []).append(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == subjects
    assert all(len(names) == 1 for names in claims.values()), claims
    with session_scope() as session:
        assert {task.state for task in session.scalars(select(QueueTask))} == {"leased"}


def test_a_silent_workers_lease_expires_by_the_database_clock(openft_home):
    upgrade_database()
    make_tasks("stale", 1)
    with session_scope() as session:
        dead = queue.claim(session, "dead-worker", ["test.kind"], SETTINGS)
    with session_scope() as session:  # its lease is still good: nobody else gets the task
        assert queue.claim(session, "other", ["test.kind"], SETTINGS) is None
    with session_scope() as session:  # two minutes later by the database's clock
        session.execute(update(QueueTask).values(lease_expires_at=db_now() - 120))
    with session_scope() as session:
        taken = queue.claim(session, "other", ["test.kind"], SETTINGS)
    assert taken is not None and taken.previous_owner == "dead-worker" and taken.token == dead.token + 1
    with session_scope() as session:
        assert not queue.renew(session, dead, SETTINGS)  # the old holder learns it lost the task
        assert queue.renew(session, taken, SETTINGS)
        assert [(c.owner, c.lease_token) for c in queue.claims(session, taken.task_id)] == [
            ("dead-worker", 1), ("other", 2)
        ]


def test_enqueue_twice_keeps_one_active_task(openft_home):
    upgrade_database()
    with session_scope() as session:
        org_id = get_or_create_organization(session, "dup").id
        first = queue.enqueue(session, "test.kind", "subject-1", org_id)
        assert queue.enqueue(session, "test.kind", "subject-1", org_id).id == first.id
        assert session.scalar(select(QueueTask.created_at)) <= time.time() + 1

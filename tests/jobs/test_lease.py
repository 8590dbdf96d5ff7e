"""Leases and fenced writes: a runner that lost its lease (taken over, withdrawn, expired) writes nothing;
claims are fair between organizations and respect the per-organization cap."""

from __future__ import annotations

import pytest
from sqlalchemy import select, update

from openft.jobs import queue
from openft.jobs.clock import db_now
from openft.jobs.lease import LeaseLost
from openft.jobs.settings import QueueSettings
from openft.store import jobs as job_store
from openft.store.accounts import get_or_create_organization
from openft.store.db import session_scope, upgrade_database
from openft.store.pagination import new_seq
from openft.store.queue_tables import QueueTask
from openft.store.tables import FineTuningJob, JobEvent

SETTINGS = QueueSettings(lease_seconds=30, max_per_organization=0)


@pytest.fixture
def org_ids(openft_home):
    upgrade_database()
    with session_scope() as session:
        return [get_or_create_organization(session, name).id for name in ("alpha", "beta")]


def add_job(org_id: str, job_id: str) -> None:
    with session_scope() as session:
        session.add(FineTuningJob(id=job_id, seq=new_seq(), organization_id=org_id, model="m", training_file="f",
                                  status="queued", method={"type": "supervised"}, seed=0, result_files=[],
                                  created_at=0, attempts=0))
        queue.enqueue(session, "fine_tuning.train", job_id, org_id)


def claim(worker: str, settings: QueueSettings = SETTINGS):
    with session_scope() as session:
        return queue.claim(session, worker, ["fine_tuning.train"], settings)


def expire_all() -> None:
    with session_scope() as session:
        session.execute(update(QueueTask).values(lease_expires_at=db_now() - 600))


def events(job_id: str) -> list[tuple[str, int | None]]:
    with session_scope() as session:
        rows = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq))
        return [(e.message, e.lease_token) for e in rows]


def test_a_taken_over_runner_writes_nothing(org_ids):
    add_job(org_ids[0], "ftjob-1")
    old = claim("worker-a")
    with old.session() as session:
        job_store.add_event(session, "ftjob-1", "step from a")
    expire_all()
    new = claim("worker-b")
    assert (new.token, new.previous_owner) == (old.token + 1, "worker-a")
    with pytest.raises(LeaseLost), old.session() as session:
        job_store.add_event(session, "ftjob-1", "late step from a")
        session.get(FineTuningJob, "ftjob-1").status = "succeeded"
    with new.session() as session:
        job_store.add_event(session, "ftjob-1", "step from b")
    assert events("ftjob-1") == [("step from a", 1), ("step from b", 2)]
    with session_scope() as session:
        assert session.get(FineTuningJob, "ftjob-1").status == "queued"


def test_an_expired_or_withdrawn_lease_refuses_writes(org_ids):
    add_job(org_ids[0], "ftjob-2")
    lease = claim("worker-a")
    expire_all()  # nobody took it over yet, but the lease is over by the database's clock
    with pytest.raises(LeaseLost), lease.session():
        pass
    with session_scope() as session:
        assert not queue.renew(session, lease, SETTINGS)
    lease = claim("worker-b")  # the expired task goes to the next claimer
    assert (lease.subject_id, lease.previous_owner) == ("ftjob-2", "worker-a")
    with session_scope() as session:
        queue.withdraw(session, "ftjob-2")  # the user cancelled
    with pytest.raises(LeaseLost), lease.session():
        pass


def test_claims_alternate_between_organizations_and_respect_the_cap(org_ids):
    alpha, beta = org_ids
    for i in range(3):
        add_job(alpha, f"ftjob-a{i}")
    add_job(beta, "ftjob-b0")  # queued last
    first, second = claim("w1"), claim("w2")
    assert [first.subject_id, second.subject_id] == ["ftjob-a0", "ftjob-b0"]  # beta does not wait behind alpha
    capped = QueueSettings(lease_seconds=30, max_per_organization=1)
    assert claim("w3", capped) is None  # alpha already runs one task and beta has nothing left
    assert claim("w3").subject_id == "ftjob-a1"  # without the cap it would run


def test_a_cancel_racing_a_runners_fenced_write_waits_for_it_instead_of_deadlocking(org_ids):
    """A runner's fenced transaction locks the task row, then the job's row. A cancel (which sets the job's
    status, then withdraws the task) takes them in the same order, so on PostgreSQL it waits for the runner
    rather than deadlocking with it (one side then fails: the cancel answered 500 before)."""
    import threading
    import time

    add_job(org_ids[0], "ftjob-1")
    lease = claim("worker-a")
    holding, errors = threading.Event(), []

    def runner() -> None:
        try:
            with lease.session() as session:  # the task row is locked from here
                holding.set()
                time.sleep(1.0)  # the cancel starts meanwhile
                session.execute(update(FineTuningJob).where(FineTuningJob.id == "ftjob-1").values(current_step=7))
        except Exception as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=runner)
    thread.start()
    assert holding.wait(10)
    with session_scope() as session:
        job = session.get(FineTuningJob, "ftjob-1")
        job.status = "cancelled"
        assert queue.withdraw(session, "ftjob-1") == 1
    thread.join(30)
    assert errors == []
    with session_scope() as session:
        job = session.get(FineTuningJob, "ftjob-1")
        assert (job.status, job.current_step) == ("cancelled", 7)
        assert session.scalars(select(QueueTask.state).where(QueueTask.subject_id == "ftjob-1")).one() == "withdrawn"

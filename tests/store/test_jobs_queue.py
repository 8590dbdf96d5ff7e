"""The job queue: claiming is atomic, so concurrent workers never run the same job."""

from __future__ import annotations

import threading
import time

from openft.store import jobs as job_store
from openft.store.accounts import get_or_create_organization
from openft.store.db import session_scope, upgrade_database
from openft.store.pagination import new_seq
from openft.store.tables import FineTuningJob


def add_job(org_id: str, job_id: str, status: str = "queued") -> None:
    with session_scope() as session:
        session.add(FineTuningJob(id=job_id, seq=new_seq(), organization_id=org_id, model="m", training_file="f",
                                  status=status, method={"type": "supervised"}, seed=0, result_files=[],
                                  created_at=int(time.time()), attempts=0))


def test_each_job_is_claimed_by_exactly_one_of_many_workers(openft_home):
    upgrade_database()
    with session_scope() as session:
        org_id = get_or_create_organization(session, "queue").id
    job_ids = [f"ftjob-{i:03d}" for i in range(20)]
    for job_id in job_ids:
        add_job(org_id, job_id)

    claims: dict[str, list[str]] = {}
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(name: str) -> None:
        start.wait()
        while True:
            with session_scope() as session:
                claimed = job_store.claim_next(session, "queued", name)
            if claimed is None:
                return
            with lock:
                claims.setdefault(claimed, []).append(name)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claims) == job_ids
    assert all(len(names) == 1 for names in claims.values()), claims
    with session_scope() as session:
        assert {job.status for job in session.query(FineTuningJob)} == {"running"}


def test_a_silent_worker_is_detected_as_stale(openft_home):
    upgrade_database()
    with session_scope() as session:
        org_id = get_or_create_organization(session, "stale").id
    add_job(org_id, "ftjob-stale")
    with session_scope() as session:
        assert job_store.claim_next(session, "queued", "dead-worker") == "ftjob-stale"
        session.get(FineTuningJob, "ftjob-stale").heartbeat_at = time.time() - 120
    with session_scope() as session:
        assert [job.id for job in job_store.stale_jobs(session, 30)] == ["ftjob-stale"]
        assert job_store.stale_jobs(session, 300) == []

"""What the queue's safety costs: a fenced write (one runner event) vs the same write unfenced, a lease
renewal, and a claim, on SQLite and (when OPENFT_BENCH_POSTGRES_URL names an empty database) PostgreSQL.

Prints JSON: milliseconds per operation (median of N). The unfenced write is the baseline, measured in
the same run. `python bench/queue_overhead.py`
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time

from openft.config import reset_settings


def measure(fn, n: int) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return round(statistics.median(times), 3)


def run(url: str, n: int) -> dict[str, float]:
    os.environ["OPENFT_DATABASE_URL"] = url
    reset_settings()
    from openft.jobs import queue
    from openft.jobs.settings import QueueSettings
    from openft.store import jobs as job_store
    from openft.store.accounts import get_or_create_organization
    from openft.store.db import dispose_engines, session_scope, upgrade_database
    from openft.store.pagination import new_seq
    from openft.store.tables import FineTuningJob

    dispose_engines()
    upgrade_database()
    settings = QueueSettings(lease_seconds=3600, max_per_organization=0)
    with session_scope() as session:
        org = get_or_create_organization(session, "bench").id
        for i in range(n):
            job_id = f"ftjob-bench{i:05d}-{new_seq()}"
            session.add(FineTuningJob(id=job_id, seq=new_seq(), organization_id=org, model="m", training_file="f",
                                      status="queued", method={"type": "supervised"}, seed=0, result_files=[],
                                      created_at=0, attempts=0))
            queue.enqueue(session, "bench", job_id, org)
    leases = []

    def claim():
        with session_scope() as session:
            leases.append(queue.claim(session, "bench-worker", ["bench"], settings))

    out = {"claim_ms": measure(claim, n)}
    lease = leases[0]

    def plain_event():
        with session_scope() as session:
            job_store.add_event(session, lease.subject_id, "Step 1/1: training loss=1.0")

    def fenced_event():
        with lease.session() as session:
            job_store.add_event(session, lease.subject_id, "Step 1/1: training loss=1.0")

    def renew():
        with session_scope() as session:
            queue.renew(session, lease, settings)

    out["event_write_unfenced_ms"] = measure(plain_event, n)
    out["event_write_fenced_ms"] = measure(fenced_event, n)
    out["lease_renewal_ms"] = measure(renew, n)
    dispose_engines()
    return out


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    results = {}
    with tempfile.TemporaryDirectory() as home:
        os.environ["OPENFT_HOME"] = home
        results["sqlite"] = run(f"sqlite:///{home}/bench.db", n)
    if os.environ.get("OPENFT_BENCH_POSTGRES_URL"):
        results["postgresql"] = run(os.environ["OPENFT_BENCH_POSTGRES_URL"], n)
    print(json.dumps({"operations": n, "results": results}, indent=2))


if __name__ == "__main__":
    main()

"""The child process that runs one leased task: forked by the worker's forkserver (openft.jobs.spawner), or
``python -m openft.jobs.child LEASE_JSON PARENT_PID``.

Every run happens here, never in the worker or the API process: a crash or an out-of-memory kill takes
down only this process, and its memory is returned. A side thread checks the lease against the
database clock; the moment it no longer holds (taken over, withdrawn, expired) the process exits.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading

from sqlalchemy import select

from openft.jobs import queue
from openft.jobs.lease import Lease, LeaseLost
from openft.jobs.registry import get_kind, resolve
from openft.jobs.settings import queue_settings
from openft.store.db import session_scope
from openft.store.queue_tables import QueueTask

EXIT_LEASE_LOST = 75  # EX_TEMPFAIL: the work goes on elsewhere

log = logging.getLogger(__name__)


def die_with_parent() -> None:
    """If the worker dies (even by SIGKILL) this process must stop too, or a new worker would race it."""
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def lease_state(lease: Lease) -> str:
    """"holds", "finished" (this runner recorded its outcome), or "lost"."""
    with session_scope() as session:
        if session.scalar(select(QueueTask.id).where(*lease.holds_clause())) is not None:
            return "holds"
        return "finished" if queue.finished_under(session, lease) else "lost"


def watch_lease(lease: Lease, parent_pid: int, interval: float) -> None:
    """Exit at once when the worker is gone or the lease no longer holds; writes nothing."""
    stop = threading.Event()
    while not stop.wait(interval):
        if os.getppid() != parent_pid:
            os._exit(EXIT_LEASE_LOST)
        try:
            state = lease_state(lease)
        except Exception:  # a database hiccup: the fenced writes still refuse anything after expiry
            log.warning("could not check the lease of task %s", lease.task_id, exc_info=True)
            continue
        if state == "finished":
            return  # the runner wrote its final status and is returning
        if state == "lost":
            log.warning("lease %s on task %s lost; stopping", lease.token, lease.task_id)
            os._exit(EXIT_LEASE_LOST)


def forked_main(lease_json: str, env: dict[str, str]) -> None:
    """Entry point in a child forked from the forkserver: take the worker's settings as they are now."""
    os.environ.clear()
    os.environ.update(env)
    from openft.config import reset_settings

    reset_settings()
    run_leased(lease_json, os.getppid())  # the parent is the forkserver, which exits when the worker dies


def main() -> None:
    run_leased(sys.argv[1], int(sys.argv[2]))


def run_leased(lease_json: str, parent_pid: int) -> None:
    logging.basicConfig(level=logging.WARNING)
    die_with_parent()
    lease = Lease.from_json(lease_json)
    watcher = threading.Thread(
        target=watch_lease, args=(lease, parent_pid, queue_settings().watch_seconds), daemon=True, name="lease-watch"
    )
    watcher.start()
    run = resolve(get_kind(lease.kind).run)
    try:
        code = run(lease)
    except LeaseLost as lost:
        log.warning("%s", lost)
        sys.exit(EXIT_LEASE_LOST)
    sys.exit(int(code or 0))


if __name__ == "__main__":
    main()

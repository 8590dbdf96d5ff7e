"""The worker: leases tasks from the queue and runs each in a child process, renewing the lease meanwhile.

Each child is forked from a process that has already imported the training stack (jobs/spawner.py).
Any number of workers (a thread inside `openft serve`, `openft worker` processes on several machines
sharing the database) run at once. A side thread renews the lease while the child runs, so every long
phase (file validation, model load, training, evaluation scoring) is covered. When a renewal fails the
lease is lost (taken over, withdrawn by cancel or pause, or expired while this process was frozen):
the child is killed at once. A worker that dies stops renewing; once its lease expires (by the
database's clock) another worker takes the task over, under a new fencing token.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import threading
import time

from openft.jobs import queue
from openft.jobs.allocator import allocator_setting
from openft.jobs.lease import Lease, LeaseLost
from openft.jobs.registry import get_kind, resolve
from openft.jobs.registry import kinds as registered_kinds
from openft.jobs.settings import queue_settings
from openft.jobs.spawner import ChildProcess, start_child
from openft.store.db import session_scope
from openft.store.ids import random_token

log = logging.getLogger(__name__)
KILL_GRACE_SECONDS = 5.0


class Worker:
    def __init__(
        self, worker_id: str | None = None, poll_seconds: float = 1.0, kinds: list[str] | None = None
    ) -> None:
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{random_token(6)}"
        self.poll_seconds = poll_seconds
        unknown = sorted(set(kinds or ()) - set(registered_kinds()))
        if unknown:
            raise ValueError(f"unknown queue kind(s): {', '.join(unknown)}; known: {', '.join(registered_kinds())}")
        self.kinds = list(kinds) if kinds else None  # None: every registered kind
        self.stop_event = threading.Event()
        self.child: ChildProcess | None = None
        # Children get the environment the worker started with: what libraries add to os.environ later in
        # this process (torch, transformers, when the API server loads a model) is not the worker's setting.
        self.env = os.environ.copy()
        allocator_setting(self.env)  # a wrong OPENFT_TASK_ALLOCATOR stops the worker here, not each task

    # --- the loop ------------------------------------------------------------------------------------
    def run_forever(self) -> None:
        log.info("worker %s started", self.worker_id)
        while not self.stop_event.is_set():
            try:
                did_work = self.run_once()
            except Exception:  # a bad task must not stop the worker; the runner records its own failure
                log.exception("worker iteration failed")
                did_work = False
            if not did_work:
                self.stop_event.wait(self.poll_seconds)

    def stop(self) -> None:
        self.stop_event.set()
        child = self.child
        if child is not None and child.poll() is None:
            child.terminate()

    def run_once(self) -> bool:
        with session_scope() as session:
            lease = queue.claim(session, self.worker_id, self.kinds or list(registered_kinds()))
        if lease is None:
            return False
        self.run_task(lease)
        return True

    # --- one task ------------------------------------------------------------------------------------
    def run_task(self, lease: Lease) -> None:
        # The lease is renewed from before the child exists: the first task of a worker waits for its forkserver
        # to import the training stack (seconds on a loaded machine), longer than a short lease.
        started = _Started()
        lost = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(lease, started, lost), daemon=True, name="heartbeat")
        beat.start()
        try:
            child = start_child(lease.to_json(), self.env)
        except BaseException:
            started.failed()
            beat.join(timeout=5)
            raise
        self.child = child
        started.set(child)
        if lost.is_set() and child.poll() is None:
            child.kill()  # the lease was lost while the child was starting
        try:
            while child.poll() is None:
                if self.stop_event.wait(0.2):
                    self._terminate(child)  # shutdown: hand the task back so another worker resumes it
                    with session_scope() as session:
                        queue.release(session, lease)
                    return
        finally:
            exit_code = child.wait()
            self.child = None
            beat.join(timeout=5)
        if not lost.is_set():
            self._after_child(lease, exit_code)

    def _heartbeat(self, lease: Lease, started: _Started, lost: threading.Event) -> None:
        interval = queue_settings().heartbeat_seconds
        next_beat = time.monotonic() + interval
        while started.running():
            time.sleep(max(0.0, min(0.1, next_beat - time.monotonic())))
            if time.monotonic() < next_beat:
                continue
            next_beat = time.monotonic() + interval
            try:
                with session_scope() as session:
                    held = queue.renew(session, lease)
            except Exception:  # the database is briefly unreachable: try again; the lease may still expire
                log.warning("could not renew the lease on task %s", lease.task_id, exc_info=True)
                continue
            if not held:
                lost.set()
                child = started.child
                if child is None:
                    log.warning("lease %s on task %s lost while its child was starting", lease.token, lease.task_id)
                elif self._finished_by_child(lease):
                    self._wait_or_kill(child)  # the runner recorded its outcome and is exiting on its own
                else:
                    log.warning("lease %s on task %s lost; stopping its child", lease.token, lease.task_id)
                    if child.poll() is None:
                        child.kill()
                return

    @staticmethod
    def _finished_by_child(lease: Lease) -> bool:
        try:
            with session_scope() as session:
                return queue.finished_under(session, lease)
        except Exception:
            return False

    @staticmethod
    def _wait_or_kill(child: ChildProcess) -> None:
        try:
            child.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()

    @staticmethod
    def _terminate(child: ChildProcess) -> None:
        if child.poll() is not None:
            return
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=KILL_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()

    def _after_child(self, lease: Lease, exit_code: int) -> None:
        """The child finishes its task itself; one it still holds after exiting ended abnormally."""
        if self.stop_event.is_set():
            return
        on_crash = get_kind(lease.kind).on_crash
        try:
            with lease.session() as session:
                if on_crash is not None:
                    resolve(on_crash)(lease, session, exit_code)
                lease.finish(session)
        except LeaseLost:
            pass  # finished normally, withdrawn, or already taken over: nothing to record here


class _Started:
    """The child of a task, once started; the heartbeat runs while it is starting or running."""

    def __init__(self) -> None:
        self.child: ChildProcess | None = None
        self._failed = False

    def set(self, child: ChildProcess) -> None:
        self.child = child

    def failed(self) -> None:
        self._failed = True

    def running(self) -> bool:
        if self._failed:
            return False
        return self.child is None or self.child.poll() is None


def start_embedded_worker() -> Worker:
    worker = Worker()
    thread = threading.Thread(target=worker.run_forever, name="openft-worker", daemon=True)
    thread.start()
    return worker

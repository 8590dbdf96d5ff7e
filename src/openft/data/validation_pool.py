"""Upload validation in worker processes, with a time budget, abandoned when its client goes away.

Validation is CPU work that holds the GIL for seconds at a time on a huge line (regexes over a 10 MB string,
`json.loads`), so in the API process it would stall every other request. Here it runs in a separate process:

- A worker is a fresh interpreter (`python -m openft.data.validation_worker`; nothing of the server's
  threads, sockets or locks is inherited, and unlike multiprocessing's `spawn` it never re-imports the
  server's main script) and is kept warm between uploads, because starting one costs an import of the
  tokenizer stack (seconds). At most `OPENFT_VALIDATION_WORKERS` run at once; an idle worker exits by itself
  after IDLE_EXIT_S, so an idle server gives the memory back.
- The budget (`OPENFT_VALIDATION_TIMEOUT_SECONDS`) starts once the worker has loaded the base model's
  tokenizer. The worker stops by itself after the line it is checking when the budget runs out, and returns
  a report of the lines checked so far; a worker still busy GRACE_S later (one enormous line) is killed and
  the outcome says that the file was not fully checked. Either way the outcome is status `error` with code
  `validation_timeout`: the file is stored, nothing is lost.
- A caller that gives up (the uploading client disconnected) sets `abandon`: the worker is killed at once.

Each task carries the caller's OPENFT_* / HF_* environment, so a warm worker always validates against the
settings and model registry the caller sees (tests change OPENFT_HOME between servers in one process).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from openft.data.validation_service import UnknownValidationModel, ValidationOutcome, timed_out_outcome

log = logging.getLogger(__name__)

IDLE_EXIT_S = 600.0  # a worker with no task for this long exits
WARMUP_LIMIT_S = 300.0  # starting a worker and loading the tokenizer; past this the worker is taken as stuck
GRACE_S = 5.0  # after the budget, how long a worker may still take to finish the line it is on
POLL_S = 0.05  # how often the waiting thread looks at `abandon`
ENV_PREFIXES = ("OPENFT_", "HF_", "TRANSFORMERS_", "TOKENIZERS_")


class ValidationAbandoned(Exception):
    """The caller gave up (its client disconnected); the worker was stopped."""


class ValidationWorkerFailed(RuntimeError):
    """The worker raised or died for a reason that is not the file's (a broken model folder, out of memory)."""


def caller_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIXES)}


@dataclass(eq=False)
class _Worker:
    process: subprocess.Popen
    conn: Connection
    last_used: float

    def is_alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        if self.is_alive():
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:  # unkillable (stuck in the kernel): leave it, never block the caller
            log.warning("validation worker %s did not exit after SIGKILL", self.process.pid)
        self.conn.close()


def _start_worker() -> _Worker:
    """A fresh interpreter running openft.data.validation_worker, talking over one end of a socket pair."""
    ours, theirs = socket.socketpair()
    try:
        process = subprocess.Popen(
            [sys.executable, "-m", "openft.data.validation_worker", str(theirs.fileno())],
            pass_fds=(theirs.fileno(),),
            stdin=subprocess.DEVNULL,
        )
    finally:
        theirs.close()
    return _Worker(process, Connection(ours.detach()), time.monotonic())


class ValidationPool:
    def __init__(self, max_workers: int, grace_s: float = GRACE_S) -> None:
        self.max_workers = max_workers
        self.grace_s = grace_s
        self._slots = threading.BoundedSemaphore(max_workers)
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._lock = threading.Lock()

    def validate(
        self, path: Path, model: str, budget: float, abandon: threading.Event | None = None
    ) -> ValidationOutcome:
        """Validate `path` against base model `model` in a worker; blocks the calling thread (not the GIL).
        `budget`: seconds (0: none). Raises UnknownValidationModel, ValidationAbandoned, ValidationWorkerFailed."""
        abandon = abandon or threading.Event()
        while not self._slots.acquire(timeout=POLL_S):
            if abandon.is_set():
                raise ValidationAbandoned()
        try:
            task = {"path": str(path), "model": model, "budget": budget, "env": caller_env()}
            worker = self._take_worker()
            try:
                outcome = self._run(worker, task, budget, abandon)
            except UnknownValidationModel:
                self._give_back(worker)  # the caller's mistake; the worker is fine
                raise
            except BaseException:
                self._discard(worker)
                raise
            if worker.is_alive():
                self._give_back(worker)
            else:
                self._discard(worker)
            return outcome
        finally:
            self._slots.release()

    def _run(self, worker: _Worker, task: dict, budget: float, abandon: threading.Event) -> ValidationOutcome:
        worker.conn.send(task)
        try:
            kind, value = self._receive(worker, WARMUP_LIMIT_S, abandon)
        except TimeoutError:
            self._discard(worker)  # could not even load the tokenizer in time (a machine under heavy load)
            return timed_out_outcome(budget)
        if kind == "started":
            limit = budget + self.grace_s if budget else None
            try:
                kind, value = self._receive(worker, limit, abandon)
            except TimeoutError:
                self._discard(worker)  # stuck on one line past the budget: no partial report to be had
                return timed_out_outcome(budget)
        if kind == "done":
            return value
        if kind == "unknown_model":
            raise UnknownValidationModel(value)
        raise ValidationWorkerFailed(f"validation failed: {value}")

    def _receive(self, worker: _Worker, limit: float | None, abandon: threading.Event) -> tuple[str, Any]:
        until = None if limit is None else time.monotonic() + limit
        while not worker.conn.poll(POLL_S):
            if abandon.is_set():
                raise ValidationAbandoned()
            if not worker.is_alive() and not worker.conn.poll(0):
                raise ValidationWorkerFailed(f"the validation process died (exit code {worker.process.returncode})")
            if until is not None and time.monotonic() > until:
                raise TimeoutError()
        try:
            return worker.conn.recv()
        except EOFError:
            raise ValidationWorkerFailed("the validation process closed its pipe") from None

    def _take_worker(self) -> _Worker:
        stale = []
        with self._lock:
            worker = None
            while self._idle and worker is None:
                candidate = self._idle.pop()
                # Leave a worker close to its own idle exit: it might quit while the task is on its way.
                if candidate.is_alive() and time.monotonic() - candidate.last_used < IDLE_EXIT_S - 60:
                    worker = candidate
                else:
                    stale.append(candidate)
        for old in stale:
            old.stop()
        worker = worker or _start_worker()
        with self._lock:
            self._busy.add(worker)
        return worker

    def _give_back(self, worker: _Worker) -> None:
        worker.last_used = time.monotonic()
        with self._lock:
            self._busy.discard(worker)
            self._idle.append(worker)

    def _discard(self, worker: _Worker) -> None:
        with self._lock:
            self._busy.discard(worker)
        worker.stop()

    def close(self) -> None:
        """Stop every worker, busy ones included (the server is exiting)."""
        with self._lock:
            workers, self._idle = [*self._idle, *self._busy], []
            self._busy.clear()
        for worker in workers:
            worker.stop()


_pool: ValidationPool | None = None
_pool_lock = threading.Lock()


def shared_pool() -> ValidationPool:
    """The process-wide pool, sized by OPENFT_VALIDATION_WORKERS when first used."""
    global _pool
    from openft.config import get_settings

    with _pool_lock:
        if _pool is None:
            _pool = ValidationPool(get_settings().validation_workers)
            atexit.register(_pool.close)
        return _pool


def validate_isolated(
    path: Path, model: str, abandon: threading.Event | None = None, budget: float | None = None
) -> ValidationOutcome:
    """`validate_training_file` in a worker process with the OPENFT_VALIDATION_TIMEOUT_SECONDS budget."""
    from openft.config import get_settings

    seconds = get_settings().validation_timeout_seconds if budget is None else budget
    return shared_pool().validate(path, model, seconds, abandon)

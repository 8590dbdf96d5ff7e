"""How the worker starts the child process of a task: forked from a process that already imported the training stack.

A fresh interpreter per task imports torch, transformers, TRL and PEFT again every time: about 14 s of CPU on
a 2-core machine, before the task does anything. Instead, multiprocessing's forkserver imports them once
(PRELOAD) and forks each child from that state. The child is still its own process, as before: a crash, an
out-of-memory kill or a SIGKILL from cancel takes down only it, and its memory goes back when it exits. The
forkserver only imported modules (no threads, no CUDA context, no database connection), so forking it is safe.

What cannot be re-read in a forked child is the environment that the imported libraries read at import time
(OMP_NUM_THREADS, HF_HUB_OFFLINE, ...): a child is forked only while the worker's environment, OPENFT_*
aside, is the one the forkserver started with; otherwise (and with OPENFT_WORKER_PRELOAD=0, which also gives
the imported stack's memory back while a worker is idle) the child is a fresh `python -m openft.jobs.child`.

Children run with the task allocator (jobs/allocator.py: tcmalloc where installed), which only an environment
at process start can choose: it is in each child's environment, and in this process's while a start may
launch the forkserver, so the forkserver and every child forked from it have it loaded.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
from typing import Protocol

from openft.jobs.allocator import starting_with, task_env

PRELOAD = ["openft.jobs.preload"]
_lock = threading.Lock()
_forkserver_env: dict[str, str] | None = None  # the environment the forkserver imported the stack under


class ChildProcess(Protocol):
    pid: int

    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def kill(self) -> None: ...
    def terminate(self) -> None: ...
    def send_signal(self, sig: int) -> None: ...


class ForkedChild:
    """A forkserver child behind subprocess.Popen's methods (exit code < 0: killed by that signal)."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process
        self.pid = process.pid

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"task child {self.pid}", timeout)
        return code

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass


def _import_env(env: dict[str, str]) -> dict[str, str]:
    """The part of the environment libraries may read at import time (openft's own settings are re-read)."""
    return {k: v for k, v in env.items() if not k.startswith("OPENFT_")}


def preload_enabled(env: dict[str, str]) -> bool:
    return env.get("OPENFT_WORKER_PRELOAD", "1").strip().lower() not in ("0", "false", "no", "off")


def _can_fork(env: dict[str, str]) -> bool:
    global _forkserver_env
    if not preload_enabled(env):
        return False
    with _lock:
        if _forkserver_env is None:  # the first task starts the forkserver, under this environment
            _forkserver_env = _import_env(env)
            multiprocessing.set_forkserver_preload(PRELOAD)
        return _forkserver_env == _import_env(env)


def start_child(lease_json: str, env: dict[str, str]) -> ChildProcess:
    """Start the child that runs the leased task, with environment `env` (the worker's) and the task
    allocator's additions (jobs/allocator.py)."""
    env = task_env(env)
    if _can_fork(env):
        from openft.jobs.child import forked_main

        process = multiprocessing.get_context("forkserver").Process(
            target=forked_main, args=(lease_json, env), name="openft-task", daemon=False
        )
        with _lock, starting_with(env):  # a forkserver this start launches loads the task allocator
            process.start()
        return ForkedChild(process)
    return subprocess.Popen([sys.executable, "-m", "openft.jobs.child", lease_json, str(os.getpid())], env=env)

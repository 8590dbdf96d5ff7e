"""A server without an embedded worker, `openft worker` processes started and stopped by the test, and
direct access to the server's database for checking what the queue recorded."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.fixtures.server import LiveServer, register_model, start_server

TERMINAL = {"succeeded", "failed", "cancelled"}


def chat_rows(n: int, tag: str = "") -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"Code for item {tag}{i}?"},
                      {"role": "assistant", "content": f"ITEM-{tag}{i:03d}"}]}
        for i in range(n)
    ]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


def start_queue_server(home: Path, tiny_model_dir: Path, **env: str) -> LiveServer:
    register_model(home, "tiny-llama", tiny_model_dir)
    return start_server(home, {"OPENFT_VALIDATION_MODEL": "tiny-llama", "OPENFT_EMBEDDED_WORKER": "0", **env})


def start_worker(server: LiveServer, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    log = open(server.home / f"{name}.log", "a")
    return subprocess.Popen(
        [sys.executable, "-m", "openft", "worker", "--poll-seconds", "0.2", *args],
        env={**server.env, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
    )


def stop_workers(workers: list[subprocess.Popen]) -> None:
    for worker in workers:
        if worker.poll() is None:
            worker.terminate()
    for worker in workers:
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()


def database_url(server: LiveServer) -> str:
    return server.env.get("OPENFT_DATABASE_URL") or f"sqlite:///{server.home / 'openft.db'}"


def upload(client, n: int = 12, tag: str = "") -> str:
    return client.files.create(file=(f"train{tag}.jsonl", io.BytesIO(chat_rows(n, tag))), purpose="fine-tune").id


def wait_until(predicate, timeout: float, what: str, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def worker_logs(server: LiveServer) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(server.home.glob("*.log")))


def as_env(server: LiveServer) -> dict[str, str]:
    """Point this test process's openft settings at the server's home and database."""
    return {"OPENFT_HOME": str(server.home), "OPENFT_DATABASE_URL": database_url(server)}


def set_env(values: dict[str, str]) -> None:
    from openft.config import reset_settings

    os.environ.update(values)
    reset_settings()

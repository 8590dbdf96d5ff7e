"""The worker process of openft.data.validation_pool: `python -m openft.data.validation_worker FD`.

It validates one file at a time for the API process, which talks to it over the socket FD (pickled messages,
multiprocessing's Connection framing). Per task: ("unknown_model", name), or ("started", None) once the base
model's tokenizer and the other lazily loaded parts are ready, then ("done", ValidationOutcome); ("error",
text) when something that is not the file's fault fails.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from openft.data.validation_pool import ENV_PREFIXES, IDLE_EXIT_S, caller_env
from openft.data.validation_service import UnknownValidationModel


def _adopt_env(env: dict[str, str]) -> None:
    """Take the caller's settings, so a warm worker validates against the registry the caller sees."""
    if env == caller_env():
        return
    for key in list(os.environ):
        if key.startswith(ENV_PREFIXES) and key not in env:
            del os.environ[key]
    os.environ.update(env)
    from openft.config import reset_settings

    reset_settings()


def _warm_up(model: str) -> None:
    """Load everything validation loads lazily, so the time budget measures validation alone."""
    from openft.data.moderation import scan_example
    from openft.data.openai_tokens import encoding
    from openft.data.report import OPENAI_ENCODINGS
    from openft.data.validation_service import resolve_validation_model
    from openft.models.registry import load_tokenizer

    load_tokenizer(resolve_validation_model(model).name)
    for name in OPENAI_ENCODINGS:
        encoding(name)
    scan_example({"content": "warm-up: api_key = 'Zx81kq0Lm2' call 415-555-2671 and go kill the lights"})


def _run_task(conn: Connection, task: dict[str, Any]) -> None:
    from openft.data.validation_service import validate_training_file

    _adopt_env(task["env"])
    try:
        _warm_up(task["model"])
    except UnknownValidationModel as exc:
        conn.send(("unknown_model", exc.name))
        return
    conn.send(("started", None))
    budget = task["budget"]
    deadline = time.monotonic() + budget if budget else None
    conn.send(("done", validate_training_file(Path(task["path"]), task["model"], deadline=deadline)))


def serve(conn: Connection) -> None:
    """Serve tasks until the API process closes the socket, or none arrives for IDLE_EXIT_S."""
    while conn.poll(IDLE_EXIT_S):
        try:
            task = conn.recv()
        except EOFError:
            return
        try:
            _run_task(conn, task)
        except (BrokenPipeError, ConnectionResetError, EOFError):
            return
        except Exception as exc:  # reported to the caller; the worker stays usable
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


if __name__ == "__main__":
    # Ctrl-C on `openft serve` reaches its whole process group; the server stops its workers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    serve(Connection(int(sys.argv[1])))

"""Kinds of work the queue runs. Packages that provide work register a kind; the queue imports nothing else.

A kind names two functions by ``"module:function"`` path, so the worker process never imports the
heavy runner code (torch, transformers) and only the child process does:

- ``run(lease)`` runs in a child process. Every write goes through ``lease.session()``; the runner marks
  the task finished with ``lease.finish(session)`` in the transaction that writes the final status.
- ``on_crash(lease, session, exit_code)`` (optional) runs in the worker, inside a fenced session, when the
  child exited without finishing a task it still holds; it records the failure on the subject.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Modules whose import registers kinds. Add yours here (or list it in OPENFT_JOB_KIND_MODULES).
KIND_MODULES = ("openft.training.queue_kinds", "openft.evals.queue_kind", "openft.evals.openai_queue_kind",
                "openft.evals.distill.queue_kind")


@dataclass(frozen=True)
class Kind:
    name: str
    run: str
    on_crash: str | None = None


_kinds: dict[str, Kind] = {}
_loaded = False


def register_kind(name: str, run: str, on_crash: str | None = None) -> Kind:
    kind = Kind(name=name, run=run, on_crash=on_crash)
    existing = _kinds.get(name)
    if existing is not None and existing != kind:
        raise ValueError(f"queue kind {name!r} is already registered with other runners")
    _kinds[name] = kind
    return kind


def _load_kind_modules() -> None:
    global _loaded
    if _loaded:
        return
    extra = [m.strip() for m in os.environ.get("OPENFT_JOB_KIND_MODULES", "").split(",") if m.strip()]
    for module in (*KIND_MODULES, *extra):
        importlib.import_module(module)
    _loaded = True


def kinds() -> dict[str, Kind]:
    _load_kind_modules()
    return dict(_kinds)


def get_kind(name: str) -> Kind:
    found = kinds().get(name)
    if found is None:
        raise KeyError(f"no runner is registered for queue kind {name!r}")
    return found


def resolve(path: str) -> Callable[..., Any]:
    module, _, function = path.partition(":")
    return getattr(importlib.import_module(module), function)

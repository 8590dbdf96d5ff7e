"""Evaluations' kind of queue work: `evaluation`. Importing this module registers it."""

from __future__ import annotations

from openft.jobs.registry import register_kind

EVALUATION = "evaluation"

register_kind(EVALUATION, run="openft.evals.jobs:execute_run", on_crash="openft.evals.jobs:run_crashed")

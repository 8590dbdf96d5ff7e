"""The queue kind of OpenAI Evals API runs: `openai_eval_run`. Importing this module registers it."""

from __future__ import annotations

from openft.evals.openai_objects import QUEUE_KIND
from openft.jobs.registry import register_kind

register_kind(
    QUEUE_KIND, run="openft.evals.openai_runs:run_from_lease", on_crash="openft.evals.openai_runs:run_crashed"
)

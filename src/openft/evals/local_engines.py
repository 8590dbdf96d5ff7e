"""The organization's models (base, `ft:`, checkpoints) on in-process engines, called synchronously.

Used where a worker's child process needs a model openft serves without going through the API server: eval
runs sampling and judging (evals/openai_runs.py), and the judge of a reinforcement fine-tuning job's model
grader (training/rft_runner.py). Nothing loads until the first call, so a run that never asks a model never
imports torch here; `close()` returns the engines' memory.
"""

from __future__ import annotations

import asyncio
from typing import Any


class LocalEngines:
    """`complete(body) -> chat.completion dict` on engines scoped to one organization, started on first use."""

    def __init__(self, organization_id: str) -> None:
        self.organization_id = organization_id
        self.models = self.backend = self.loop = None

    def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.backend is None:
            from openft.evals.local_models import LocalModels
            from openft.serving.backend import LocalBackend

            self.models = LocalModels(self.organization_id)
            self.backend = LocalBackend(self.models.route)
            self.loop = asyncio.new_event_loop()
        return self.loop.run_until_complete(self.backend.chat_completion(body))

    def close(self) -> None:
        if self.backend is not None:
            self.loop.close()
            self.models.close()
            self.models = self.backend = self.loop = None

"""Distillation's kind of queue work: `distillation`. Importing this module registers it (jobs.registry)."""

from __future__ import annotations

from openft.jobs.registry import register_kind

register_kind("distillation", run="openft.evals.distill.runner:run_from_lease",
              on_crash="openft.evals.distill.runner:run_crashed")

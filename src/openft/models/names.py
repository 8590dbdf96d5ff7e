"""Model names in OpenAI's shape.

Base models keep their registry name (``smollm2-135m-instruct``, ``HuggingFaceTB/SmolLM2-360M``).
A fine-tuned model is ``ft:{base}:{org}:{suffix}:{id8}`` (the suffix may be empty) and one of its
checkpoints is ``ft:{base}:{org}:{suffix}:{id8}:ckpt-step-{step}``.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

FT_PREFIX = "ft"
CHECKPOINT_PREFIX = "ckpt-step-"
_SHORT_ID = re.compile(r"^[A-Za-z0-9]+$")


@dataclass(frozen=True)
class ParsedModelName:
    base: str
    fine_tuned: str | None = None  # the ft name without any checkpoint part
    checkpoint_step: int | None = None
    org: str | None = None
    suffix: str | None = None  # "" when the job had no suffix

    @property
    def is_fine_tuned(self) -> bool:
        return self.fine_tuned is not None


def _short_job_id(job_id: str) -> str:
    """Eight stable characters per job, so two jobs with the same suffix still get different names."""
    return hashlib.sha256(job_id.encode()).hexdigest()[:8]


def _check_segment(value: str, what: str, *, allow_empty: bool = False) -> None:
    if ":" in value:
        raise ValueError(f"{what} {value!r} must not contain ':'")
    if not value and not allow_empty:
        raise ValueError(f"{what} must not be empty")


def fine_tuned_model_name(base: str, org: str, suffix: str | None, job_id: str) -> str:
    """``ft:{base}:{org}:{suffix}:{8 chars derived from job_id}``."""
    suffix = suffix or ""
    _check_segment(base, "base model name")
    _check_segment(org, "organization")
    _check_segment(suffix, "suffix", allow_empty=True)
    if not job_id:
        raise ValueError("job id must not be empty")
    return f"{FT_PREFIX}:{base}:{org}:{suffix}:{_short_job_id(job_id)}"


def checkpoint_model_name(ft_name: str, step: int) -> str:
    """``{ft_name}:ckpt-step-{step}`` for a checkpoint saved at ``step``."""
    parsed = parse_model_name(ft_name)
    if parsed.fine_tuned is None or parsed.checkpoint_step is not None:
        raise ValueError(f"{ft_name!r} is not a fine-tuned model name (ft:base:org:suffix:id)")
    if step < 0:
        raise ValueError(f"checkpoint step must be >= 0, got {step}")
    return f"{ft_name}:{CHECKPOINT_PREFIX}{step}"


def _malformed(name: str, why: str) -> ValueError:
    return ValueError(
        f"malformed fine-tuned model name {name!r}: {why}; expected "
        "'ft:{base}:{org}:{suffix}:{id}' or 'ft:{base}:{org}:{suffix}:{id}:ckpt-step-{N}'"
    )


def parse_model_name(name: str) -> ParsedModelName:
    """Split a base, fine-tuned or checkpoint model name; raise ValueError for malformed ``ft:`` names."""
    if not name or not name.strip():
        raise ValueError("model name must not be empty")
    if not name.startswith(f"{FT_PREFIX}:"):
        return ParsedModelName(base=name)
    parts = name.split(":")
    step: int | None = None
    if len(parts) == 6:
        checkpoint = parts.pop()
        digits = checkpoint.removeprefix(CHECKPOINT_PREFIX)
        if not checkpoint.startswith(CHECKPOINT_PREFIX) or not digits.isdigit():
            raise _malformed(name, f"the last part {checkpoint!r} is not 'ckpt-step-<number>'")
        step = int(digits)
    if len(parts) != 5:
        raise _malformed(name, f"it has {len(parts)} ':'-separated parts")
    _, base, org, suffix, short_id = parts
    if not base:
        raise _malformed(name, "the base model is empty")
    if not org:
        raise _malformed(name, "the organization is empty")
    if not _SHORT_ID.match(short_id):
        raise _malformed(name, f"the id {short_id!r} must be letters and digits")
    return ParsedModelName(base=base, fine_tuned=":".join(parts), checkpoint_step=step, org=org, suffix=suffix)

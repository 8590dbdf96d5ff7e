"""The validation report: what `validate_file` returns, the API stores and the CLI prints."""

from __future__ import annotations

import math
from array import array
from typing import Literal

from pydantic import BaseModel, Field

OPENAI_ENCODINGS = ("cl100k_base", "o200k_base")


class LineError(BaseModel):
    """One problem. `line` is 1-based (None for whole-file problems); `field` is a JSON path or None."""

    line: int | None
    code: str
    message: str
    field: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}" if self.line is not None else "file"
        at = f" at {self.field}" if self.field else ""
        return f"{where}: {self.code}{at}: {self.message}"


class Distribution(BaseModel):
    """Summary of one number per example (nearest-rank percentiles)."""

    min: int
    mean: float
    p50: int
    p95: int
    max: int
    total: int


class Samples:
    """Collects one integer per example compactly (8 bytes each), so a million examples stay cheap."""

    def __init__(self) -> None:
        self.values = array("q")

    def add(self, value: int) -> None:
        self.values.append(value)

    def __len__(self) -> int:
        return len(self.values)

    def distribution(self) -> Distribution | None:
        if not self.values:
            return None
        ordered = sorted(self.values)
        total = sum(ordered)

        def rank(q: float) -> int:
            return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

        return Distribution(
            min=ordered[0],
            mean=round(total / len(ordered), 2),
            p50=rank(0.5),
            p95=rank(0.95),
            max=ordered[-1],
            total=total,
        )


class Stats(BaseModel):
    n_lines: int = 0  # physical lines, blank ones included
    n_examples: int = 0  # non-blank lines
    n_valid: int = 0  # examples of the file's format without errors; only these are trained and counted
    n_duplicates: int = 0  # valid examples identical (as canonical JSON) to an earlier one
    messages_per_example: Distribution | None = None  # chat and DPO (prompt + preferred output)
    # Token statistics with the base model's tokenizer and chat template; None without a tokenizer.
    tokenizer: str | None = None
    context_length: int | None = None
    tokens_per_example: Distribution | None = None
    assistant_tokens_per_example: Distribution | None = None  # trained tokens (labels != -100)
    n_over_context: int | None = None
    billable_tokens_per_epoch: int | None = None  # sum of min(context_length, tokens)


class OpenAITokenCount(BaseModel):
    """What OpenAI would count for the valid examples with one encoding (see docs/validation.md)."""

    encoding: str
    total_tokens: int
    tokens_per_example: Distribution | None


class ModerationFinding(BaseModel):
    """One moderation finding (openft.data.moderation): the excerpt masks personal data and secrets."""

    line: int | None
    field: str | None
    detector: str
    category: str
    excerpt: str
    score: float
    note: str = ""


class ModerationSummary(BaseModel):
    n_findings: int = 0
    n_lines_flagged: int = 0
    flagged_lines: list[int] = Field(default_factory=list)
    by_detector: dict[str, int] = Field(default_factory=dict)
    by_category: dict[str, int] = Field(default_factory=dict)
    findings: list[ModerationFinding] = Field(default_factory=list)  # the first `max_issues`, in line order


class ValidationReport(BaseModel):
    format: Literal["chat", "dpo", "completion", "rft"] | None = None
    ok: bool = False
    errors: list[LineError] = Field(default_factory=list)  # the first `max_issues`, in line order
    warnings: list[LineError] = Field(default_factory=list)
    n_errors: int = 0  # all of them, also those not kept
    n_warnings: int = 0
    error_counts: dict[str, int] = Field(default_factory=dict)
    warning_counts: dict[str, int] = Field(default_factory=dict)
    stats: Stats = Field(default_factory=Stats)
    openai_tokens: dict[str, OpenAITokenCount] = Field(default_factory=dict)
    moderation: ModerationSummary | None = None  # None when moderation was not run

    def summary(self, max_chars: int = 500) -> str:
        """One line for File.status_details."""
        if self.ok:
            text = f"Valid {self.format} file: {self.stats.n_valid} examples"
            if self.stats.tokens_per_example is not None:
                text += f", {self.stats.tokens_per_example.total:,} tokens"
            if self.n_warnings:
                text += f", {self.n_warnings} warning{'s' * (self.n_warnings != 1)}"
            if self.moderation and self.moderation.n_findings:
                m = self.moderation
                text += f", {m.n_findings} moderation finding{'s' * (m.n_findings != 1)} on {m.n_lines_flagged} line"
                text += "s" * (m.n_lines_flagged != 1)
            return text + "."
        shown = "; ".join(str(error) for error in self.errors[:3])
        more = f" (and {self.n_errors - 3} more)" if self.n_errors > 3 else ""
        text = f"{self.n_errors} error{'s' * (self.n_errors != 1)}: {shown}{more}"
        return text if len(text) <= max_chars else text[: max_chars - 3] + "..."

"""An organization's moderation policy applied to a training file: what a job may run on.

`off`: no check. `warn`: the findings are listed (job events) and the job runs. `block`: a file with any
finding cannot be used; the error names the lines and the reasons.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from openft.data.lines import parse_json, read_lines, strip_line_end
from openft.data.moderation.scan import ModerationCollector

MAX_LINES_NAMED = 10


def scan_jsonl(path: Path, limit: int = 1000) -> dict[str, Any]:
    """The moderation summary of a JSONL file (as in the validation report), for files validated before
    moderation existed."""
    collector = ModerationCollector(limit=limit)
    with open(path, "rb") as stream:
        for number, raw in enumerate(read_lines(stream), start=1):
            if raw.data is None:
                continue
            try:
                example = parse_json(strip_line_end(raw.data, first=number == 1).decode("utf-8"))
            except (ValueError, RecursionError, UnicodeError):
                continue
            if isinstance(example, dict):
                collector.add_example(example, number)
    return collector.result()


def file_moderation(report: dict[str, Any] | None, path: Path) -> dict[str, Any]:
    """The file's moderation summary: from its stored validation report, else scanned now."""
    stored = (report or {}).get("moderation")
    return stored if stored is not None else scan_jsonl(path)


def describe_findings(moderation: dict[str, Any], max_lines: int = MAX_LINES_NAMED) -> str:
    """'line 3: personal_data/payment_card (***1111); line 7: secret/aws_access_key (AKIA…)' and a count."""
    by_line: dict[int | None, list[dict[str, Any]]] = {}
    for f in moderation.get("findings", []):
        by_line.setdefault(f["line"], []).append(f)
    parts = []
    for line in list(by_line)[:max_lines]:
        reasons = ", ".join(
            f"{f['category']} at {f['field']} ({f['excerpt'][:80]})" if f.get("field") else f["category"]
            for f in by_line[line][:3]
        )
        parts.append(f"line {line}: {reasons}")
    text = "; ".join(parts)
    flagged = moderation.get("n_lines_flagged", len(by_line))
    if flagged > len(parts):
        text += f"; and {flagged - len(parts)} more line(s)"
    return text


def blocked_message(file_id: str, moderation: dict[str, Any]) -> str:
    n, lines = moderation["n_findings"], moderation["n_lines_flagged"]
    return (
        f"File {file_id} is refused by your organization's moderation policy (block): {n} finding(s) on "
        f"{lines} line(s): {describe_findings(moderation)}. See GET /v1/files/{file_id}/validation; "
        f"POST /v1/files/{file_id}/redact writes a cleaned copy, POST /v1/moderation/policy changes the policy."
    )


def warning_message(file_id: str, moderation: dict[str, Any]) -> str:
    counts = ", ".join(f"{k} {v}" for k, v in moderation.get("by_category", {}).items())
    return (
        f"Moderation: {moderation['n_findings']} finding(s) on {moderation['n_lines_flagged']} line(s) of "
        f"{file_id} ({counts}); the job runs (policy: warn). First: {describe_findings(moderation, 3)}"
    )

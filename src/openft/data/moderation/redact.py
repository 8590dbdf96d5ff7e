"""Write a cleaned copy of a JSONL training file: the original stays as it is, so nothing is lost.

Personal data and secrets are replaced inside their strings by a placeholder naming what was there
("[EMAIL]", "[SECRET]"); an example with harmful content is dropped (a threat cannot be cleaned by masking a
span of it) unless `drop_harmful=False`. Lines that are not JSON objects are copied unchanged, so the copy's
validation report still points at them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from openft.data.lines import parse_json, read_lines, strip_line_end
from openft.data.moderation.harmful import harassment_scores
from openft.data.moderation.scan import NOT_SCANNED_KEYS, matches_in

PLACEHOLDERS = {
    "email": "[EMAIL]",
    "phone": "[PHONE]",
    "payment_card": "[CARD_NUMBER]",
    "iban": "[IBAN]",
    "national_id": "[NATIONAL_ID]",
    "secret": "[SECRET]",
}


@dataclass
class RedactionSummary:
    n_lines: int = 0
    n_lines_changed: int = 0
    n_lines_dropped: int = 0
    dropped_lines: list[int] = field(default_factory=list)
    replaced: Counter = field(default_factory=Counter)  # detector -> count

    def as_dict(self) -> dict[str, Any]:
        return {
            "n_lines": self.n_lines,
            "n_lines_changed": self.n_lines_changed,
            "n_lines_dropped": self.n_lines_dropped,
            "dropped_lines": self.dropped_lines[:1000],
            "replaced": dict(sorted(self.replaced.items())),
        }


def redact_text(text: str, harassment: float | None = None) -> tuple[str, Counter, bool]:
    """(cleaned text, replacements by detector, whether harmful content was found)."""
    matches = matches_in(text, harassment)
    harmful = any(m.detector == "harmful" for m in matches)
    replaced: Counter = Counter()
    out, last = [], 0
    for m in sorted((m for m in matches if m.detector in PLACEHOLDERS), key=lambda m: m.start):
        out += [text[last : m.start], PLACEHOLDERS[m.detector]]
        last = m.end
        replaced[m.detector] += 1
    out.append(text[last:])
    return "".join(out), replaced, harmful


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() if k not in NOT_SCANNED_KEYS for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return []


def redact_example(example: Any) -> tuple[Any, Counter, bool]:
    """The example with every scanned string cleaned (same structure), replacements, harmful found."""
    texts = _strings(example)
    scores = iter(harassment_scores(texts))
    total: Counter = Counter()
    harmful = False

    def clean(value: Any) -> Any:
        nonlocal harmful
        if isinstance(value, str):
            text, replaced, found = redact_text(value, next(scores))
            total.update(replaced)
            harmful = harmful or found
            return text
        if isinstance(value, dict):
            return {k: (v if k in NOT_SCANNED_KEYS else clean(v)) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(example), total, harmful


def redact_jsonl(source: Path, destination: BinaryIO, *, drop_harmful: bool = True) -> RedactionSummary:
    summary = RedactionSummary()
    with open(source, "rb") as stream:
        for number, raw in enumerate(read_lines(stream), start=1):
            summary.n_lines += 1
            if raw.data is None:
                continue  # an over-long line: validation reports it; not copied into a training file
            data = strip_line_end(raw.data, first=number == 1)
            try:
                example = parse_json(data.decode("utf-8"))
            except (ValueError, RecursionError, UnicodeError):
                example = None
            if not isinstance(example, dict):
                destination.write(data + b"\n")
                continue
            cleaned, replaced, harmful = redact_example(example)
            if harmful and drop_harmful:
                summary.n_lines_dropped += 1
                summary.dropped_lines.append(number)
                continue
            if replaced:
                summary.n_lines_changed += 1
                summary.replaced.update(replaced)
                data = json.dumps(cleaned, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
            destination.write(data + b"\n")
    return summary

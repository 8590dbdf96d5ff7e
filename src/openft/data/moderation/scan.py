"""Run every detector over a training example (or any text) and place the findings."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from openft.data.moderation.findings import Finding, Match, excerpt
from openft.data.moderation.harmful import HARASSMENT_THRESHOLD, find_lexicon, harassment_scores
from openft.data.moderation.personal import PERSONAL_DETECTORS
from openft.data.moderation.secrets import find_secrets

# When two detectors claim overlapping text, the earlier one here wins (a card number is not also a phone).
PRIORITY = ("secret", "payment_card", "iban", "national_id", "email", "phone", "harmful")
NOT_SCANNED_KEYS = {"role", "type", "id", "tool_call_id", "weight"}  # structure, not content
DETECTORS = ("email", "phone", "payment_card", "iban", "national_id", "secret", "harmful")


def text_fields(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(JSON path, string) of every string in an example, keys such as `role` left out."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, child in value.items():
            if key not in NOT_SCANNED_KEYS:
                yield from text_fields(child, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for i, child in enumerate(value):
            yield from text_fields(child, f"{path}[{i}]")


def _resolve(matches: list[Match]) -> list[Match]:
    """Drop matches overlapping a higher-priority (then longer, then earlier) one. Harmful-content matches
    are about meaning, not a value, so they stand beside the others (a threat may be violence and harassment)."""
    ranked = sorted(matches, key=lambda m: (PRIORITY.index(m.detector), -(m.end - m.start), m.start))
    kept: list[Match] = []
    for m in ranked:
        if m.detector == "harmful" or not any(k.detector != "harmful" and k.overlaps(m) for k in kept):
            kept.append(m)
    return sorted(kept, key=lambda m: (m.start, PRIORITY.index(m.detector)))


def matches_in(text: str, harassment: float | None = None) -> list[Match]:
    """Every detector's matches in one string. `harassment`: the classifier's score, if already computed."""
    found: list[Match] = []
    for detector in PERSONAL_DETECTORS:
        found.extend(detector(text))
    found.extend(find_secrets(text))
    found.extend(find_lexicon(text))
    if harassment is None:
        harassment = harassment_scores([text])[0]
    if harassment >= HARASSMENT_THRESHOLD:
        # The classifier judges the whole string, so the finding covers it (shown as its opening words).
        found.append(Match("harmful", "harassment", 0, len(text), score=harassment, note="classifier", sensitive=False))
    return _resolve(found)


def scan_texts(texts: list[tuple[str | None, str]], line: int | None = None) -> list[Finding]:
    """Findings in (field, text) pairs, the classifier run once over all of them."""
    scores = harassment_scores([t for _, t in texts])
    findings = []
    for (path, text), score in zip(texts, scores, strict=True):
        matches = matches_in(text, score)
        for m in matches:
            findings.append(
                Finding(line, path, m.detector, m.category, excerpt(text, m, matches), m.score, m.note)
            )
    return findings


def scan_example(example: Any, line: int | None = None) -> list[Finding]:
    return scan_texts(list(text_fields(example)), line)


def scan_examples(examples: list[tuple[int | None, Any]]) -> list[Finding]:
    """Findings of many (line, example) pairs; the classifier runs once over all their strings (its fixed
    cost per call is ~10 ms, so batching makes it ~100x cheaper per line)."""
    texts = [(line, path, text) for line, example in examples for path, text in text_fields(example)]
    scores = harassment_scores([t for _, _, t in texts])
    findings = []
    for (line, path, text), score in zip(texts, scores, strict=True):
        matches = matches_in(text, score)
        findings.extend(
            Finding(line, path, m.detector, m.category, excerpt(text, m, matches), m.score, m.note) for m in matches
        )
    return findings


@dataclass
class ModerationCollector:
    """Findings of a whole file: the first `limit` kept, all counted (bounded memory like the validator)."""

    limit: int = 1000
    batch_size: int = 256
    pending: list[tuple[int, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    by_detector: Counter = field(default_factory=Counter)
    by_category: Counter = field(default_factory=Counter)
    lines: set[int] = field(default_factory=set)
    n_findings: int = 0

    def add_example(self, example: Any, line: int) -> None:
        self.pending.append((line, example))
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        pending, self.pending = self.pending, []
        for finding in scan_examples(pending):
            line = finding.line
            self.n_findings += 1
            self.by_detector[finding.detector] += 1
            self.by_category[finding.category] += 1
            self.lines.add(line)
            if len(self.findings) < self.limit:
                self.findings.append(finding)

    def result(self) -> dict[str, Any]:
        self.flush()
        return {
            "n_findings": self.n_findings,
            "n_lines_flagged": len(self.lines),
            "flagged_lines": sorted(self.lines)[: self.limit],
            "by_detector": dict(sorted(self.by_detector.items())),
            "by_category": dict(sorted(self.by_category.items())),
            "findings": [f.as_dict() for f in self.findings],
        }

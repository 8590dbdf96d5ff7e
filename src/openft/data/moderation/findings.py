"""What a detector reports, and how a finding is shown without repeating what it found."""

from __future__ import annotations

from dataclasses import dataclass

CONTEXT_CHARS = 24  # characters of surrounding text shown on each side of a finding
MAX_SHOWN_CHARS = 80  # of a harmful span (the classifier flags whole strings)


@dataclass(frozen=True)
class Match:
    """One detector hit inside one string: [start, end) of that string."""

    detector: str  # "email", "phone", "payment_card", "iban", "national_id", "secret", "harmful"
    category: str  # "personal_data/email", "secret/aws_access_key", or an OpenAI moderation category
    start: int
    end: int
    score: float = 1.0
    note: str = ""  # the kind, e.g. "Visa", "US SSN", "GitHub Token"
    sensitive: bool = True  # personal data and secrets are masked; harmful phrases are shown

    def overlaps(self, other: Match) -> bool:
        return self.start < other.end and other.start < self.end


@dataclass(frozen=True)
class Finding:
    """A match placed in a file: the line, the JSON field, and a masked excerpt."""

    line: int | None
    field: str | None
    detector: str
    category: str
    excerpt: str
    score: float
    note: str = ""

    def as_dict(self) -> dict:
        return {
            "line": self.line,
            "field": self.field,
            "detector": self.detector,
            "category": self.category,
            "excerpt": self.excerpt,
            "score": round(self.score, 4),
            "note": self.note,
        }


def mask_value(value: str, detector: str) -> str:
    """The found value with most of it hidden. Secrets keep at most 4 leading characters, and only when the
    value is long enough that 4 characters reveal a prefix ("sk-p", "AKIA", "ghp_"), never the secret."""
    n = len(value)
    if detector == "secret":
        shown = value[:4] if n >= 16 else ""
        return f"{shown}…[{n} chars hidden]"
    if detector == "email":
        local, _, domain = value.partition("@")
        return f"{local[:1]}***@{domain}"
    if detector in ("payment_card", "phone", "iban", "national_id"):
        digits_kept = 2 if detector != "payment_card" else 4
        kept = value[-digits_kept:]
        return "*" * max(0, n - digits_kept) + kept
    return "*" * n


def masked_text(text: str, matches: list[Match]) -> str:
    """`text` with every sensitive match masked (so one finding's excerpt never shows another's secret)."""
    out, last = [], 0
    for m in sorted(matches, key=lambda m: m.start):
        if m.start < last:
            continue
        out.append(text[last : m.start])
        out.append(mask_value(text[m.start : m.end], m.detector) if m.sensitive else text[m.start : m.end])
        last = m.end
    out.append(text[last:])
    return "".join(out)


def excerpt(text: str, match: Match, all_matches: list[Match]) -> str:
    """The match in context, every sensitive value in the window masked, newlines flattened."""
    masked = masked_text(text, [m for m in all_matches if m.sensitive])
    # Positions move when masks change lengths: locate the window by masking the prefix separately.
    prefix = masked_text(text[: match.start], [m for m in all_matches if m.sensitive and m.end <= match.start])
    value = text[match.start : match.end]
    if match.sensitive:
        shown = mask_value(value, match.detector)
    else:  # a harmful phrase (or a whole message the classifier flagged): shown, but not any secret inside it
        inner = [
            Match(m.detector, m.category, m.start - match.start, m.end - match.start, sensitive=True)
            for m in all_matches
            if m.sensitive and match.start <= m.start and m.end <= match.end
        ]
        shown = masked_text(value, inner)
        if len(shown) > MAX_SHOWN_CHARS:
            return " ".join(f"{prefix[-CONTEXT_CHARS:]}{shown[:MAX_SHOWN_CHARS]}…".split())
    before = prefix[-CONTEXT_CHARS:]
    after_start = len(prefix) + len(shown)
    after = masked[after_start : after_start + CONTEXT_CHARS]
    lead = "…" if len(prefix) > CONTEXT_CHARS else ""
    tail = "…" if len(masked) > after_start + CONTEXT_CHARS else ""
    return " ".join(f"{lead}{before}{shown}{after}{tail}".split())

"""Secrets: API keys, private keys and tokens.

The vendor-specific patterns come from Yelp's `detect-secrets` (its regex plugins: AWS, GitHub, GitLab, Slack,
Stripe, Twilio, SendGrid, JWT, private keys, ...), matched here directly so the whole token's span is known and
can be masked. detect-secrets' own line scanner is not used: without a file name it reports every word as a
high-entropy candidate. openft adds patterns detect-secrets lacks (current OpenAI, Anthropic, Google and
Hugging Face key formats) and a keyword rule (`api_key = ...`, `password: ...`) whose value must look random
(Shannon entropy), so `password = "see below"` is not a finding.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterator
from functools import lru_cache

from openft.data.moderation.findings import Match

# Plugins that are not about secrets in training text, or that only work on whole files.
SKIPPED_PLUGINS = {
    "Base64 High Entropy String",  # replaced by the keyword + entropy rule below
    "Hex High Entropy String",
    "Secret Keyword",  # same
    "Public IP (ipv4)",  # an address, not a credential
}

EXTRA_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("OpenAI API key", re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{32,}")),
    ("Anthropic API key", re.compile(r"\bsk-ant-[A-Za-z0-9_-]{32,}")),
    ("Google API key", re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b")),
    ("Hugging Face token", re.compile(r"\bhf_[A-Za-z0-9]{34,}\b")),
    ("Bearer token", re.compile(r"(?<=Bearer )[A-Za-z0-9._~+/-]{20,}=*")),
    ("Private key block", re.compile(r"-----BEGIN (?:[A-Z]+ )*PRIVATE KEY(?: BLOCK)?-----")),
]

KEYWORD_ASSIGNMENT = re.compile(
    r"(?i)\b(?:api[_-]?key|secret(?:[_-]?key)?|access[_-]?token|auth[_-]?token|token|password|passwd|pwd)"
    r"[\"']?\s*[:=]\s*[\"']?(?P<value>[^\s\"',;]{8,})"
)
MIN_KEYWORD_ENTROPY = 3.0  # bits per character; English words score ~2.5-3, random tokens 3.5+


def shannon_entropy(value: str) -> float:
    counts = Counter(value)
    n = len(value)
    return -sum(c / n * math.log2(c / n) for c in counts.values())


def looks_random(value: str) -> bool:
    has_digit = any(c.isdigit() for c in value)
    has_alpha = any(c.isalpha() for c in value)
    return has_digit and has_alpha and shannon_entropy(value) >= MIN_KEYWORD_ENTROPY


@lru_cache(maxsize=1)
def detect_secrets_patterns() -> list[tuple[str, re.Pattern[str]]]:
    """(secret type, regex) of every detect-secrets regex plugin that applies to free text."""
    from detect_secrets.core.plugins.util import get_mapping_from_secret_type_to_class
    from detect_secrets.plugins.base import RegexBasedDetector

    patterns = []
    for secret_type, plugin in sorted(get_mapping_from_secret_type_to_class().items()):
        if secret_type in SKIPPED_PLUGINS or not issubclass(plugin, RegexBasedDetector):
            continue
        for pattern in plugin.denylist:
            patterns.append((secret_type, pattern))
    return patterns


def _category(kind: str) -> str:
    return "secret/" + re.sub(r"[^a-z0-9]+", "_", kind.lower()).strip("_")


# Every pattern above needs a run of 16+ non-space characters, a URL with credentials, a PEM header or a key word;
# prose has none, and checking that first keeps the ~30 patterns off ordinary text.
MAY_HOLD_SECRET = re.compile(r"\S{16,}|://|BEGIN|(?i:key|secret|token|passw|pwd)")


def _required(items) -> set[str] | None:
    """Strings one of which every match of the parsed sequence `items` contains, or None if there is none to
    be had (the best run of literals, a group, or every branch of an alternation)."""
    from re import _constants as c  # re's own parser: exact, and kept in step with the regex engine

    best: set[str] | None = None

    def consider(found: set[str] | None) -> None:
        nonlocal best
        if found and all(found) and (best is None or min(map(len, found)) > min(map(len, best))):
            best = found

    run = ""
    for op, av in items:
        if op is c.LITERAL:
            run += chr(av)
            continue
        consider({run} if run else None)
        run = ""
        if op is c.SUBPATTERN and not av[1] & c.SRE_FLAG_IGNORECASE:  # (?i:...) inside: no literal case
            consider(_required(av[3]))
        elif op is c.BRANCH:
            branches = [_required(branch) for branch in av[1]]
            if all(branches):
                consider(set().union(*branches))
        elif op is c.ASSERT and av[0] != 0:  # a lookbehind's text must be in the text too (`(?<=Bearer )`)
            consider(_required(av[1]))
        elif op in (c.MAX_REPEAT, c.MIN_REPEAT, c.POSSESSIVE_REPEAT) and av[0] >= 1:
            consider(_required(av[2]))
    consider({run} if run else None)
    return best


@lru_cache(maxsize=1)
def _prepared() -> list[tuple[str, re.Pattern[str], tuple[str, ...] | None, bool]]:
    """(kind, pattern, literals one of which any match contains, whether they compare case-insensitively).
    Checking `literal in text` first keeps ~50 patterns from walking every character of a huge string that
    cannot match them (a 10 MB unbroken word cost ~20 s here)."""
    from re import _parser

    prepared = []
    for kind, pattern in [*detect_secrets_patterns(), *EXTRA_PATTERNS]:
        folded = bool(pattern.flags & re.IGNORECASE)
        try:
            literals = _required(_parser.parse(pattern.pattern, pattern.flags))
        except Exception:  # another Python's parser: no prefilter, the pattern always runs
            literals = None
        if literals is not None and folded:
            literals = {literal.lower() for literal in literals} if all(map(str.isascii, literals)) else None
        prepared.append((kind, pattern, tuple(sorted(literals)) if literals else None, folded))
    return prepared


def _may_match(text: str, lowered: str | None, literals: tuple[str, ...] | None, folded: bool) -> bool:
    if literals is None:
        return True
    if folded:
        if lowered is None:  # non-ASCII text: lower() can change lengths and re.I folds more; just run
            return True
        text = lowered
    return any(literal in text for literal in literals)


def find_secrets(text: str) -> Iterator[Match]:
    if not MAY_HOLD_SECRET.search(text):
        return
    lowered = text.lower() if text.isascii() else None
    for kind, pattern, literals, folded in _prepared():
        if not _may_match(text, lowered, literals, folded):
            continue
        for m in pattern.finditer(text):
            if m.end() > m.start():
                yield Match("secret", _category(kind), m.start(), m.end(), note=kind)
    for m in KEYWORD_ASSIGNMENT.finditer(text):
        if looks_random(m.group("value")):
            yield Match("secret", "secret/keyword_assignment", m.start("value"), m.end("value"), note="keyword value")

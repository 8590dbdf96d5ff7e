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


def find_secrets(text: str) -> Iterator[Match]:
    if not MAY_HOLD_SECRET.search(text):
        return
    for kind, pattern in [*detect_secrets_patterns(), *EXTRA_PATTERNS]:
        for m in pattern.finditer(text):
            if m.end() > m.start():
                yield Match("secret", _category(kind), m.start(), m.end(), note=kind)
    for m in KEYWORD_ASSIGNMENT.finditer(text):
        if looks_random(m.group("value")):
            yield Match("secret", "secret/keyword_assignment", m.start("value"), m.end("value"), note="keyword value")

"""Moderation of training data: personal data, secrets and harmful content (docs/moderation.md).

Detectors work offline and per string; `scan_example` places their findings in a training example (JSON field,
masked excerpt), `ModerationCollector` gathers a file's findings for the validation report, `policy` applies an
organization's `off` / `warn` / `block` setting to fine-tuning jobs and `redact` writes cleaned copies.
"""

from openft.data.moderation.findings import Finding, Match
from openft.data.moderation.harmful import OPENAI_CATEGORIES, SUPPORTED_CATEGORIES
from openft.data.moderation.scan import DETECTORS, ModerationCollector, matches_in, scan_example, scan_texts

__all__ = [
    "DETECTORS",
    "OPENAI_CATEGORIES",
    "SUPPORTED_CATEGORIES",
    "Finding",
    "Match",
    "ModerationCollector",
    "matches_in",
    "scan_example",
    "scan_texts",
]

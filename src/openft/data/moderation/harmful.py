"""Harmful content, offline, in OpenAI's moderation categories where it can honestly be supported.

Two methods (docs/moderation.md lists their blind spots):
- `harassment`: the `alt-profanity-check` classifier (a linear SVM on TF-IDF features, trained on labelled
  offensive and non-offensive comments, shipped inside its wheel: no download). It scores offensive/abusive
  language; a score of at least HARASSMENT_THRESHOLD flags the text.
- a phrase lexicon for explicit statements: self-harm intent and instructions, threats of violence, requests
  for weapons, drugs or break-ins. Lexicon matches score 1.0.
Categories neither method covers (sexual, sexual/minors, hate, hate/threatening, violence/graphic) are never
flagged and score 0: openft does not claim to detect them.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from functools import lru_cache

from openft.data.moderation.findings import Match

# OpenAI's moderation categories (omni-moderation), in its response order.
OPENAI_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "hate",
    "hate/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "sexual",
    "sexual/minors",
    "violence",
    "violence/graphic",
)
SUPPORTED_CATEGORIES = (
    "harassment",
    "harassment/threatening",
    "illicit",
    "illicit/violent",
    "self-harm",
    "self-harm/intent",
    "self-harm/instructions",
    "violence",
)
PARENT = {
    "harassment/threatening": "harassment",
    "illicit/violent": "illicit",
    "self-harm/intent": "self-harm",
    "self-harm/instructions": "self-harm",
}
HARASSMENT_THRESHOLD = 0.9
MIN_CLASSIFIED_CHARS = 3

_I_WILL = r"i(?:'ll| will|'m going to| am going to|'m gonna| am gonna| gonna| want to| wanna)"
_HOW_TO = r"(?:how (?:to|do i|can i|do you|would i)|best way to|steps to|instructions (?:to|for)|teach me to)"
LEXICON: list[tuple[str, re.Pattern[str]]] = [
    (
        "self-harm/intent",
        re.compile(
            rf"\b(?:{_I_WILL}|i plan to|i'm planning to) (?:kill|hurt|cut|harm|end) (?:myself|my life)\b"
            r"|\bi (?:want|wish) (?:to die|i (?:was|were) dead)\b|\bi(?:'m| am) (?:going to|gonna) "
            r"(?:commit suicide|take my (?:own )?life)\b|\bi(?:'m| am) suicidal\b|\bend it all tonight\b",
            re.I,
        ),
    ),
    (
        "self-harm/instructions",
        re.compile(
            rf"\b{_HOW_TO} (?:kill myself|commit suicide|cut myself|hang myself|overdose)\b"
            r"|\b(?:lethal|fatal) dose of\b|\bpainless(?:ly)? (?:way to )?(?:die|suicide)\b",
            re.I,
        ),
    ),
    (
        "harassment/threatening",
        re.compile(
            rf"\b{_I_WILL} (?:kill|murder|shoot|stab|strangle|beat(?: up)?|hurt|break your \w+ on) (?:you|u|ya)\b"
            r"|\byou(?:'re| are) (?:dead|going to die)\b(?! inside)|\bwatch your back\b",
            re.I,
        ),
    ),
    (
        "violence",
        re.compile(
            rf"\b{_I_WILL} (?:kill|murder|shoot|stab|strangle|beat(?: up)?|hurt) "
            r"(?:you|u|ya|him|her|them|everyone|my (?:boss|wife|husband|neighbou?r|teacher))\b"
            r"|\bshoot up (?:the|my|a) (?:school|office|church|mall)\b",
            re.I,
        ),
    ),
    (
        "illicit/violent",
        re.compile(
            rf"\b{_HOW_TO} (?:make|build|assemble|construct) (?:a |an )?(?:pipe |nail |homemade |car )?"
            r"(?:bomb|explosive|molotov(?: cocktail)?|ied|grenade|napalm|silencer|ghost gun)s?\b",
            re.I,
        ),
    ),
    (
        "illicit",
        re.compile(
            rf"\b{_HOW_TO} (?:make|cook|synthesi[sz]e|produce) (?:meth|methamphetamine|crack|heroin|fentanyl|lsd)\b"
            rf"|\b{_HOW_TO} (?:hack into|break into|get into) (?:someone(?:'s| else's)|my \w+'s|a|an|his|her) "
            r"(?:\w+ )?(?:account|email|phone|wifi|house|car|computer)\b"
            r"|\b(?:buy|sell|get) (?:stolen credit cards|fake passports|counterfeit (?:money|bills|cash))\b"
            rf"|\b{_HOW_TO} (?:launder money|shoplift|hotwire a car|steal a car)\b",
            re.I,
        ),
    ),
]


@lru_cache(maxsize=1)
def _classifier():
    from profanity_check import predict_prob

    return predict_prob


def harassment_scores(texts: Sequence[str]) -> list[float]:
    """The classifier's probability that each text is offensive (one batched call)."""
    scores = [0.0] * len(texts)
    index = [i for i, t in enumerate(texts) if len(t.strip()) >= MIN_CLASSIFIED_CHARS]
    if index:
        probabilities = _classifier()([texts[i] for i in index])
        for i, p in zip(index, probabilities, strict=True):
            scores[i] = float(p)
    return scores


# Every lexicon pattern contains one of these stems; one search rules most text out before the six patterns run.
LEXICON_STEMS = re.compile(
    r"kill|hurt|cut|harm|end |die|dead|suicid|overdose|dose|hang|murder|shoot|stab|strangle|beat|break|watch your"
    r"|bomb|explosive|molotov|ied|grenade|napalm|silencer|ghost gun|meth|crack|heroin|fentanyl|lsd|hack|get into"
    r"|stolen|passport|counterfeit|launder|shoplift|hotwire|steal",
    re.I,
)


# The same patterns without re.I, for ASCII text already lowered: on ASCII, lowering keeps every offset and
# matching it case-sensitively finds exactly what re.I finds, ~50x faster (re.I folds every character it
# compares, which made a 10 MB line cost ~20 s here).
_LOWERED_STEMS = re.compile(LEXICON_STEMS.pattern)
_LOWERED_LEXICON = [(category, re.compile(pattern.pattern)) for category, pattern in LEXICON]


def find_lexicon(text: str) -> Iterator[Match]:
    if text.isascii():
        text, stems, lexicon = text.lower(), _LOWERED_STEMS, _LOWERED_LEXICON
    else:
        stems, lexicon = LEXICON_STEMS, LEXICON
    if not stems.search(text):
        return
    for category, pattern in lexicon:
        for m in pattern.finditer(text):
            yield Match("harmful", category, m.start(), m.end(), note="lexicon", sensitive=False)


def category_scores(text: str, harassment: float) -> dict[str, float]:
    """OpenAI-shaped scores of one text: every category, 0 where not supported or not found."""
    scores = dict.fromkeys(OPENAI_CATEGORIES, 0.0)
    scores["harassment"] = harassment
    for m in find_lexicon(text):
        scores[m.category] = 1.0
        if m.category in PARENT:
            scores[PARENT[m.category]] = max(scores[PARENT[m.category]], 1.0)
    return scores


def flagged_categories(scores: dict[str, float]) -> dict[str, bool]:
    return {c: scores[c] >= (HARASSMENT_THRESHOLD if c == "harassment" else 1.0) for c in OPENAI_CATEGORIES}

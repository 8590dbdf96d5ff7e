"""Scores for (prediction, reference) pairs, each in [0, 1], and a registry of them by name.

Text normalisation follows the SQuAD evaluation script (lower case, drop punctuation and the articles
a/an/the, collapse whitespace), extended to Unicode: NFKC first, and every Unicode punctuation character
counts as punctuation. The LLM judge (graded and pairwise) is at the end of this module.
"""

from __future__ import annotations

import json
import math
import random
import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

Metric = Callable[[str, str], float]
Embedder = Callable[[Sequence[str]], list[list[float]]]

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_FENCE = re.compile(r"^```[\w-]*\s*\n?(.*?)\n?```$", re.DOTALL)


def _is_punctuation(char: str) -> bool:
    return char in string.punctuation or unicodedata.category(char).startswith("P")


def normalize_answer(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).lower()
    text = "".join(c for c in text if not _is_punctuation(c))  # as SQuAD: "don't" -> "dont"
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the texts are identical apart from surrounding whitespace."""
    return float(prediction.strip() == reference.strip())


def normalized_match(prediction: str, reference: str) -> float:
    """1.0 when equal after SQuAD normalisation (case, punctuation, articles, whitespace)."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 over normalised words; two empty answers agree (1.0), one empty scores 0.0."""
    pred, ref = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def extract_label(prediction: str, labels: Iterable[str] | None = None) -> str | None:
    """The first label-like token of a prediction, normalised.

    With a label set: the label that occurs earliest as whole words (the longest at a tie), so
    "The sentiment is negative." -> "negative". Without: the first word ("Positive. Because..." -> "positive").
    """
    text = normalize_answer(prediction)
    if labels is None:
        words = text.split()
        return words[0] if words else None
    best: tuple[int, int, str] | None = None
    for label in {normalize_answer(label) for label in labels} - {""}:
        match = re.search(rf"(?<!\S){re.escape(label)}(?!\S)", text)
        if match and (best is None or (match.start(), -len(label)) < best[:2]):
            best = (match.start(), -len(label), label)
    return best[2] if best else None


def label_accuracy(prediction: str, reference: str, labels: Iterable[str] | None = None) -> float:
    """1.0 when the prediction's first label-like token is the reference label."""
    return float(extract_label(prediction, labels) == normalize_answer(reference))


def parse_json_answer(text: str, strict: bool = False) -> Any:
    """Parse a JSON answer; unless strict, one surrounding ``` fence (```json ... ```) is allowed.

    Raises ValueError when the text is not JSON.
    """
    text = text.strip()
    fenced = None if strict else _FENCE.match(text)
    return json.loads(fenced.group(1) if fenced else text)


def json_validity(prediction: str, reference: str = "", strict: bool = False) -> float:
    """1.0 when the prediction parses as JSON (the reference is ignored)."""
    try:
        parse_json_answer(prediction, strict)
    except ValueError:
        return 0.0
    return 1.0


def flatten_json(value: Any, prefix: str = "") -> dict[str, Any]:
    """Leaf values by dotted path: {"a": {"b": [1]}} -> {"a.b.0": 1}. Empty containers are leaves."""
    if isinstance(value, dict) and value:
        items: Iterable[tuple[str, Any]] = value.items()
    elif isinstance(value, list) and value:
        items = ((str(i), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, child in items:
        flat.update(flatten_json(child, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def json_field_match(prediction: str, reference: str, strict: bool = False) -> float:
    """Fraction of the reference's fields (leaves, by dotted path) whose values the prediction matches.

    Values compare as parsed JSON (1 == 1.0, "1" != 1). Invalid prediction JSON scores 0.0.
    """
    try:
        expected = flatten_json(parse_json_answer(reference, strict=False))
    except ValueError as exc:
        raise ValueError(f"json_field_match: the reference is not valid JSON: {reference[:80]!r}") from exc
    try:
        actual = flatten_json(parse_json_answer(prediction, strict))
    except ValueError:
        return 0.0
    missing = object()
    hits = sum(_same(actual.get(path, missing), value) for path, value in expected.items())
    return hits / len(expected)


def _same(a: Any, b: Any) -> bool:
    # bool is an int in Python; JSON keeps true and 1 apart.
    return a == b and isinstance(a, bool) == isinstance(b, bool)


def cosine(u: Sequence[float], v: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(u, v, strict=True))
    norm = math.sqrt(sum(x * x for x in u)) * math.sqrt(sum(y * y for y in v))
    return dot / norm if norm else 0.0


def embedding_similarity(prediction: str, reference: str, embed: Embedder | None = None) -> float:
    """Cosine similarity of the two texts' embeddings, clipped to [0, 1].

    `embed` defaults to the bundled all-MiniLM-L6-v2 (openft.evals.embeddings.load_embedder).
    """
    if not prediction.strip() or not reference.strip():
        return float(prediction.strip() == reference.strip())
    if embed is None:
        from openft.evals.embeddings import load_embedder

        embed = load_embedder()
    u, v = embed([prediction, reference])
    return min(1.0, max(0.0, cosine(u, v)))


@dataclass(frozen=True)
class MetricInfo:
    name: str
    fn: Callable[..., float]
    binary: bool  # scores are only 0 or 1 (Wilson interval) rather than continuous (bootstrap)
    description: str


METRICS: dict[str, MetricInfo] = {
    info.name: info
    for info in (
        MetricInfo("exact_match", exact_match, True, "identical after trimming whitespace"),
        MetricInfo("normalized_match", normalized_match, True, "equal after SQuAD normalisation"),
        MetricInfo("label_accuracy", label_accuracy, True, "first label-like token equals the reference label"),
        MetricInfo("token_f1", token_f1, False, "SQuAD token-overlap F1"),
        MetricInfo("json_validity", json_validity, True, "prediction parses as JSON"),
        MetricInfo("json_field_match", json_field_match, False, "fraction of reference JSON fields matched"),
        MetricInfo("embedding_similarity", embedding_similarity, False, "cosine of MiniLM sentence embeddings"),
    )
}


def get_metric(name: str, **options: Any) -> Metric:
    """The metric called `name` as `fn(prediction, reference) -> float`, with options bound
    (labels= for label_accuracy, embed= for embedding_similarity, strict= for the JSON metrics)."""
    if name not in METRICS:
        raise KeyError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")
    return partial(METRICS[name].fn, **options) if options else METRICS[name].fn


def score_pairs(name: str, pairs: Iterable[tuple[str, str]], **options: Any) -> list[float]:
    """Score every (prediction, reference) pair with one metric."""
    metric = get_metric(name, **options)
    return [metric(prediction, reference) for prediction, reference in pairs]


def _is_json_container(text: str) -> bool:
    try:
        return isinstance(parse_json_answer(text), dict | list)
    except ValueError:
        return False


def default_metrics(references: Sequence[str]) -> list[str]:
    """Metric names that suit the shape of the reference answers.

    Mostly JSON objects/arrays -> json_validity + json_field_match; short label-like answers (a few words
    drawn from a small set) -> label_accuracy + exact_match; anything else -> token_f1 + embedding_similarity.
    """
    refs = [r for r in references if r.strip()]
    if not refs:
        return ["exact_match"]
    if sum(map(_is_json_container, refs)) >= 0.8 * len(refs):
        return ["json_validity", "json_field_match"]
    short = all(len(r) <= 40 and len(r.split()) <= 3 for r in refs)
    distinct = len({normalize_answer(r) for r in refs})
    if short and (distinct <= 20 or distinct <= len(refs) / 2):
        return ["label_accuracy", "exact_match"]
    return ["token_f1", "embedding_similarity"]


# --- LLM judge -------------------------------------------------------------------------------------------
# The judge is any OpenAI-compatible chat endpoint wrapped as `chat(messages) -> reply text`.

ChatFn = Callable[[list[dict[str, str]]], str]

DEFAULT_CRITERIA = "correctness (agreement with the reference answer when one is given), completeness and helpfulness"

GRADED_TEMPLATE = """Rate the assistant's answer to the question below on a scale of 1 to 10.
Criteria: {criteria}.
{reference_block}
[Question]
{question}

[Assistant's answer]
{answer}

Explain briefly, then give the rating on its own line exactly as "Rating: [[N]]", N from 1 (worst) to 10 (best)."""

PAIRWISE_TEMPLATE = """Compare two assistants' answers to the question below and decide which is better.
Criteria: {criteria}. Ignore the order of the answers and their length.
{reference_block}
[Question]
{question}

[Answer A]
{answer_a}

[Answer B]
{answer_b}

Explain briefly, then give the verdict on its own line exactly as "[[A]]" if A is better, "[[B]]" if B is better,
or "[[C]]" for a tie."""

_REFERENCE_BLOCK = "\n[Reference answer]\n{reference}\n"


@dataclass(frozen=True)
class JudgeConfig:
    """What the judge is told. Templates use {criteria}, {reference_block}, {question} and {answer}
    (graded) or {answer_a}/{answer_b} (pairwise)."""

    criteria: str = DEFAULT_CRITERIA
    system_prompt: str = "You are an impartial, strict judge of AI assistant answers."
    graded_template: str = GRADED_TEMPLATE
    pairwise_template: str = PAIRWISE_TEMPLATE
    retries: int = 1  # times to re-ask when the verdict cannot be parsed


@dataclass(frozen=True)
class GradedVerdict:
    grade: float | None  # 1-10 as the judge gave it; None when no verdict could be parsed
    raw: str

    @property
    def score(self) -> float | None:
        """The grade mapped to [0, 1]: 1 -> 0.0, 10 -> 1.0."""
        return None if self.grade is None else (self.grade - 1) / 9


@dataclass(frozen=True)
class PairwiseVerdict:
    winner: str | None  # "a", "b" or "tie" in the caller's order (already un-swapped); None: unparsed
    swapped: bool  # the judge saw answer_b first
    raw: str

    @property
    def score(self) -> float | None:
        """For answer_a: win 1.0, tie 0.5, loss 0.0."""
        return {"a": 1.0, "tie": 0.5, "b": 0.0}.get(self.winner) if self.winner else None


_NUMBER = r"(\d+(?:\.\d+)?)"
_GRADE_PATTERNS = [
    re.compile(rf"\[\[\s*{_NUMBER}\s*(?:/\s*10\s*)?\]\]"),
    re.compile(rf"\"(?:rating|score|grade)\"\s*:\s*\"?{_NUMBER}", re.IGNORECASE),
    re.compile(rf"(?:rating|score|grade)\W{{0,4}}(?:is|of|=)?\W{{0,4}}{_NUMBER}", re.IGNORECASE),
    re.compile(rf"{_NUMBER}\s*(?:/|out of)\s*10\b", re.IGNORECASE),
    re.compile(rf"^\W*{_NUMBER}\W*$"),
]
_VERDICT_PATTERNS = [
    re.compile(r"\[\[\s*(A|B|C|(?i:tie))\s*\]\]"),
    re.compile(r"\"(?i:winner|verdict|better|choice)\"\s*:\s*\"(A|B|C|(?i:tie))\""),
    re.compile(
        r"(?i:winner|verdict|better answer|final answer|choice)\W{0,4}(?i:is)?\W{0,4}"
        r"(?i:answer\s+|assistant\s+)?(A|B|(?i:(?:a\s+)?tie))\b"
    ),
    re.compile(r"(?i:answer|assistant|response)\s+(A|B)\s+(?i:is\s+better)"),
    re.compile(r"^\W*(A|B|C|(?i:tie))\W*$"),
]


def parse_grade(text: str) -> float | None:
    """The 1-10 rating in a judge's reply ("Rating: [[7]]", "Score: 7/10", '{"score": 7}', "7"), else None.

    The most explicit form wins; among equals, the last one (judges reason first, then conclude).
    """
    for pattern in _GRADE_PATTERNS:
        grades = [float(m) for m in pattern.findall(text) if 1 <= float(m) <= 10]
        if grades:
            return grades[-1]
    return None


def parse_pairwise(text: str) -> str | None:
    """ "A", "B" or "tie" as the judge saw them ("[[A]]", "[[C]]" = tie, "Winner: B", ...), else None."""
    for pattern in _VERDICT_PATTERNS:
        found = pattern.findall(text)
        if found:
            verdict = found[-1]
            return "tie" if verdict == "C" or verdict.lower().endswith("tie") else verdict
    return None


def _ask(chat: ChatFn, config: JudgeConfig, prompt: str, parse: Callable[[str], Any], fmt: str) -> tuple[Any, str]:
    messages = [{"role": "system", "content": config.system_prompt}, {"role": "user", "content": prompt}]
    raw = ""
    for _ in range(config.retries + 1):
        raw = chat(messages)
        verdict = parse(raw)
        if verdict is not None:
            return verdict, raw
        messages = [
            *messages,
            {"role": "assistant", "content": raw},
            {"role": "user", "content": f"Give only your verdict, exactly as {fmt}."},
        ]
    return None, raw


def _reference_block(reference: str | None) -> str:
    return _REFERENCE_BLOCK.format(reference=reference) if reference else ""


def judge_graded(
    chat: ChatFn, question: str, answer: str, reference: str | None = None, config: JudgeConfig = JudgeConfig()
) -> GradedVerdict:
    """Ask the judge for a 1-10 rating of one answer."""
    prompt = config.graded_template.format(
        criteria=config.criteria, reference_block=_reference_block(reference), question=question, answer=answer
    )
    grade, raw = _ask(chat, config, prompt, parse_grade, '"Rating: [[N]]"')
    return GradedVerdict(grade, raw)


def judge_pairwise(
    chat: ChatFn,
    question: str,
    answer_a: str,
    answer_b: str,
    reference: str | None = None,
    config: JudgeConfig = JudgeConfig(),
    swap: bool = False,
) -> PairwiseVerdict:
    """Ask which answer is better; with swap=True the judge sees answer_b first. The verdict is reported
    in the caller's order either way."""
    first, second = (answer_b, answer_a) if swap else (answer_a, answer_b)
    prompt = config.pairwise_template.format(
        criteria=config.criteria,
        reference_block=_reference_block(reference),
        question=question,
        answer_a=first,
        answer_b=second,
    )
    seen, raw = _ask(chat, config, prompt, parse_pairwise, '"[[A]]", "[[B]]" or "[[C]]"')
    if seen is None or seen == "tie":
        return PairwiseVerdict(seen, swap, raw)
    winner = {"A": "a", "B": "b"}[seen]
    if swap:
        winner = "b" if winner == "a" else "a"
    return PairwiseVerdict(winner, swap, raw)


def judge_pairwise_many(
    chat: ChatFn,
    items: Sequence[tuple[str, str, str, str | None]],
    config: JudgeConfig = JudgeConfig(),
    seed: int = 0,
) -> list[PairwiseVerdict]:
    """Judge (question, answer_a, answer_b, reference) items, showing each pair in a seeded random order
    so a judge's preference for the first (or second) position cancels out."""
    rng = random.Random(seed)
    return [
        judge_pairwise(chat, question, a, b, reference, config, swap=rng.random() < 0.5)
        for question, a, b, reference in items
    ]

"""string_check and text_similarity scores, from well-kept metric libraries.

- fuzzy_match: rapidfuzz `fuzz.ratio` (normalised Indel similarity), 0..1.
- bleu: sacrebleu sentence BLEU (exponential smoothing, its 13a tokeniser), 0..1.
- gleu: NLTK sentence GLEU (Google-BLEU), 0..1.
- meteor: NLTK METEOR with its exact and Porter-stem matching stages. The WordNet synonym stage is left out:
  WordNet is a data download that no PyPI wheel ships and openft never downloads at run time, so synonyms
  score as misses (scores equal or below full METEOR's).
- rouge_1..rouge_5, rouge_l: rouge-score F-measure (Porter stemming off, as in its default).
- cosine: cosine similarity of all-MiniLM-L6-v2 sentence embeddings (the model ships in a wheel).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from functools import lru_cache

Embedder = Callable[[Sequence[str]], list[list[float]]]


def string_check(operation: str, text: str, reference: str) -> float:
    if operation == "eq":
        return float(text == reference)
    if operation == "ne":
        return float(text != reference)
    if operation == "like":
        return float(reference in text)
    return float(reference.lower() in text.lower())  # ilike


class _NoSynonyms:
    """Stands in for WordNet in NLTK's METEOR: no synonym matches, no data needed."""

    def synsets(self, *_args, **_kwargs) -> list:
        return []


def _words(text: str) -> list[str]:
    return text.lower().split()


@lru_cache(maxsize=8)
def _rouge(name: str):
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer([name])


def similarity(metric: str, text: str, reference: str, embed: Callable[[], Embedder] | None = None) -> float:
    if metric == "fuzzy_match":
        from rapidfuzz import fuzz

        return fuzz.ratio(text, reference) / 100.0
    if metric == "bleu":
        import sacrebleu

        return sacrebleu.sentence_bleu(text, [reference]).score / 100.0
    if metric == "gleu":
        from nltk.translate.gleu_score import sentence_gleu

        return float(sentence_gleu([_words(reference)], _words(text)))
    if metric == "meteor":
        from nltk.translate.meteor_score import meteor_score

        if not _words(text) or not _words(reference):
            return float(_words(text) == _words(reference))
        return float(meteor_score([_words(reference)], _words(text), wordnet=_NoSynonyms()))
    if metric.startswith("rouge_"):
        name = "rougeL" if metric == "rouge_l" else "rouge" + metric[-1]
        return float(_rouge(name).score(reference, text)[name].fmeasure)
    if metric == "cosine":
        embedder = (embed or _bundled_embedder)()
        first, second = embedder([text, reference])
        return max(-1.0, min(1.0, sum(a * b for a, b in zip(first, second, strict=True))))  # unit vectors
    raise ValueError(f"unknown evaluation_metric {metric!r}")


def _bundled_embedder() -> Embedder:
    from openft.evals.embeddings import load_embedder

    return load_embedder()

"""Paired comparisons of strategies scored on the same items, and the items where they disagree ("flips").

Every strategy in an evaluation answers the same held-out items, so two strategies are compared item by item
(openft.evals.stats.paired_test: McNemar for 0/1 scores, a paired bootstrap otherwise), which finds differences
that overlapping confidence intervals miss. The flips are what a user reads to see whether fine-tuning helped:
the items one strategy gets right and the other misses, with their texts.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

from openft.evals.stats import is_binary, paired_test

# A continuous score counts as "right" from this value on when listing flips (the test itself uses raw scores).
PASS_SCORE = 0.5
MAX_FLIPS_LISTED = 50


def _column(results: dict[str, Any], name: str, metric: str) -> list[float | None]:
    return [sample["predictions"][name]["scores"].get(metric) for sample in results["samples"]]


def _paired_scores(results: dict[str, Any], a: str, b: str, metric: str) -> tuple[list[int], list[float], list[float]]:
    """Indices and scores of the items both strategies were scored on (a judge may leave some unscored)."""
    index, xs, ys = [], [], []
    for i, (x, y) in enumerate(zip(_column(results, a, metric), _column(results, b, metric), strict=True)):
        if x is not None and y is not None:
            index.append(i)
            xs.append(float(x))
            ys.append(float(y))
    return index, xs, ys


def _scored_names(results: dict[str, Any], metric: str) -> list[str]:
    """Strategies with a quality on `metric`, best first (the run's ranking)."""
    scored = {s["name"] for s in results.get("strategies", []) if s["quality"].get(metric)}
    return [name for name in results.get("ranking", []) if name in scored]


def compare(results: dict[str, Any], a: str, b: str, metric: str | None = None, *, alpha: float = 0.05) -> dict:
    """The paired test of A against B and the items each gets right that the other misses (JSON-ready)."""
    metric = metric or results["primary_metric"]
    index, xs, ys = _paired_scores(results, a, b, metric)
    if not index:
        raise ValueError(f"{a} and {b} share no scored item on {metric}")
    test = paired_test(xs, ys, alpha=alpha, seed=0)
    binary = is_binary(xs) and is_binary(ys)
    a_only, b_only = [], []
    for i, x, y in zip(index, xs, ys, strict=True):
        a_right, b_right = x >= PASS_SCORE, y >= PASS_SCORE
        if a_right != b_right:
            sample = results["samples"][i]
            item = {
                "item": i + 1,
                "input": sample["input"],
                "reference": sample["reference"],
                a: {"text": sample["predictions"][a]["text"], "score": x},
                b: {"text": sample["predictions"][b]["text"], "score": y},
            }
            (a_only if a_right else b_only).append(item)
    return {
        "a": a,
        "b": b,
        "metric": metric,
        "method": test.method,
        "mean_difference": test.mean_difference,
        "low": test.low,
        "high": test.high,
        "p_value": test.p_value,
        "significant": test.significant,
        "alpha": alpha,
        "n": test.n,
        "a_better": test.a_better,
        "b_better": test.b_better,
        "right_rule": "score = 1" if binary else f"score >= {PASS_SCORE}",
        "a_only": a_only[:MAX_FLIPS_LISTED],
        "b_only": b_only[:MAX_FLIPS_LISTED],
        "n_a_only": len(a_only),
        "n_b_only": len(b_only),
    }


def all_pairs(results: dict[str, Any], metric: str | None = None, *, alpha: float = 0.05) -> list[dict]:
    """Every pair of scored strategies (higher-ranked first), without the item lists: the advisor's input."""
    if not results.get("samples"):
        return []
    metric = metric or results["primary_metric"]
    out = []
    for a, b in combinations(_scored_names(results, metric), 2):
        try:
            c = compare(results, a, b, metric, alpha=alpha)
        except ValueError:
            continue
        out.append({k: v for k, v in c.items() if k not in ("a_only", "b_only")})
    return out


def best_vs_others(results: dict[str, Any], metric: str | None = None, *, alpha: float = 0.05) -> list[dict]:
    """The best-ranked strategy against each other one, with the flipped items: the report's section."""
    if not results.get("samples"):
        return []
    metric = metric or results["primary_metric"]
    names = _scored_names(results, metric)
    out = []
    for other in names[1:]:
        try:
            out.append(compare(results, names[0], other, metric, alpha=alpha))
        except ValueError:
            continue
    return out

"""Does the fine-tuned small model match a bigger one? Each fine-tuned model against each rival: the "rival:"
strategies (other base models of the registry) and the external endpoint, from the paired tests on the same
items that the advisor already runs (evals.paired)."""

from __future__ import annotations

from typing import Any

RIVAL_KINDS = ("rival", "external")


def _test_name(method: str) -> str:
    return "paired bootstrap" if method == "paired-bootstrap" else method.replace("mcnemar-", "McNemar, ")


def rival_verdicts(results: dict[str, Any], comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One verdict per (fine-tuned model, rival) pair that was tested: matches, beats or falls short."""
    strategies = {s["name"]: s for s in results.get("strategies", [])}
    metric = results.get("primary_metric")
    fine_tuned = [s for s in strategies.values() if s["kind"] == "fine-tuned"]
    rivals = [s for s in strategies.values() if s["kind"] in RIVAL_KINDS]
    tests = {(c["a"], c["b"]): c for c in comparisons}
    out = []
    for ft in fine_tuned:
        for rival in rivals:
            test = tests.get((ft["name"], rival["name"]))
            sign = 1
            if test is None:
                test, sign = tests.get((rival["name"], ft["name"])), -1
            if test is None:
                continue
            difference = sign * test["mean_difference"]  # fine-tuned minus rival
            low, high = sorted((sign * test["low"], sign * test["high"]))
            if not test["significant"] or difference == 0:
                outcome, words = "matches", f"{ft['name']} matches {rival['name']}: no significant difference"
            elif difference > 0:
                outcome, words = "beats", f"{ft['name']} is significantly better than {rival['name']}"
            else:
                outcome, words = "falls_short", f"{ft['name']} falls significantly short of {rival['name']}"
            ft_q, rival_q = ft["quality"].get(metric) or {}, rival["quality"].get(metric) or {}
            sentence = (
                f"{words} ({metric} {ft_q.get('mean', float('nan')):.3f} vs {rival_q.get('mean', float('nan')):.3f}, "
                f"difference {difference:+.3f} [{low:+.3f}, {high:+.3f}], {_test_name(test['method'])}, "
                f"p = {test['p_value']:.3g}, {test['n']} paired items)."
            )
            out.append(
                {
                    "fine_tuned": ft["name"],
                    "rival": rival["name"],
                    "rival_model": rival["model"],
                    "metric": metric,
                    "outcome": outcome,
                    "difference": difference,
                    "low": low,
                    "high": high,
                    "p_value": test["p_value"],
                    "method": test["method"],
                    "n": test["n"],
                    "verdict": sentence,
                }
            )
    return out

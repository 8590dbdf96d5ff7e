"""One reinforcement fine-tuning step as OpenAI's metric event reports it.

Shape (OpenAI's RFT guide, "Training metrics"): top-level `train_reward_mean` / `valid_reward_mean` (and the
older `train_mean_reward` / `full_valid_mean_reward`), `scores.graders[]` per grader, `errors.graders[]` with
`train_<error>_mean|count`, `timing.step` (sampling, training, eval, full_iteration) and `timing.graders[]`,
and `usage.samples`. openft adds `train_loss`, `learning_rate`, `completion_tokens_mean`.
"""

from __future__ import annotations

from typing import Any

from openft.graders.engine import ERROR_FLAGS
from openft.training.rft_reward import SplitTotals

ALWAYS_REPORTED = ("other_error", "sample_parse_error", "invalid_variable_error")


def _mean(total: float, count: int) -> float:
    return total / count if count else 0.0


def step_metrics(
    parts: list[tuple[str, str]],
    train: SplitTotals | None,
    valid: SplitTotals | None,
    timing: dict[str, float],
    logs: dict[str, float],
) -> dict[str, Any]:
    metrics: dict[str, Any] = {}
    scores: dict[str, Any] = {"graders": []}
    errors: dict[str, Any] = {"graders": []}
    latency: list[dict[str, Any]] = []
    splits = [(split, totals) for split, totals in (("train", train), ("valid", valid)) if totals and totals.count]
    for name, kind in parts:
        score, error, late = {"name": name, "type": kind}, {"name": name, "type": kind}, {"name": name, "type": kind}
        for split, totals in splits:
            score[f"{split}_reward_mean"] = _mean(totals.part_rewards.get(name, 0.0), totals.count)
            late[f"{split}_execution_latency_mean"] = _mean(totals.latency, totals.count)
            for flag in ERROR_FLAGS:  # OpenAI's three generic errors always, the grader-specific ones when seen
                count = totals.errors.get(flag, 0)
                if count or flag in ALWAYS_REPORTED:
                    error[f"{split}_{flag}_mean"] = _mean(count, totals.count)
                    error[f"{split}_{flag}_count"] = float(count)
        scores["graders"].append(score)
        errors["graders"].append(error)
        latency.append(late)
    for split, totals in splits:
        mean = _mean(totals.reward, totals.count)
        metrics[f"{split}_reward_mean"] = scores[f"{split}_reward_mean"] = mean
        parse_errors = _mean(totals.errors.get("sample_parse_error", 0), totals.count)
        if split == "train":
            metrics["train_mean_reward"] = mean
        else:
            metrics["full_valid_mean_reward"] = mean
            metrics["full_valid_mean_parse_error"] = parse_errors
    metrics.update({"scores": scores, "errors": errors,
                    "timing": {"step": {k: round(v, 6) for k, v in timing.items()}, "graders": latency}})  # fmt: skip
    if "loss" in logs:
        metrics["train_loss"] = float(logs["loss"])
    if "learning_rate" in logs:
        metrics["learning_rate"] = float(logs["learning_rate"])
    if "completions/mean_length" in logs:
        metrics["completion_tokens_mean"] = float(logs["completions/mean_length"])
        metrics["usage"] = {"samples": {"train_completion_tokens_mean": metrics["completion_tokens_mean"]}}
    return metrics


def reward_message(step: int, total: int, metrics: dict[str, Any]) -> str:
    """OpenAI's wording: "Step 10/20 , train mean reward=0.42, full validation mean reward=0.68"."""
    parts = [f"train mean reward={metrics['train_reward_mean']:.2f}"]
    if "valid_reward_mean" in metrics:
        parts.append(f"full validation mean reward={metrics['valid_reward_mean']:.2f}")
    if "full_valid_mean_parse_error" in metrics:
        parts.append(f"full validation mean parse error={metrics['full_valid_mean_parse_error']:.2f}")
    return f"Step {step}/{total}, " + ", ".join(parts)

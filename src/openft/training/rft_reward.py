"""The reward of reinforcement fine-tuning: the job's grader (openft.graders) applied to each sampled answer.

`GraderReward` is the reward function TRL's GRPOTrainer calls with a batch of completions; each completion is
graded as `sample.output_text` against its training row as `item`; a model grader's judge (rft_runner.py builds
it) is asked once per sample, in turn. A grader that fails on a sample scores 0
and the failure is counted under OpenAI's error names. `RewardLedger` keeps what a metric event reports:
mean reward overall and per grader, error rates and grader latency.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from openft.graders import GradeResult, Judge, grade
from openft.graders.engine import ERROR_FLAGS
from openft.graders.spec import sub_graders


def grader_parts(grader: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, type) of each grader reported on its own: a multi grader's parts, else the grader itself."""
    if grader["type"] == "multi":
        return [(name, spec["type"]) for name, spec in (sub_graders(grader) or {}).items()]
    return [(grader["name"], grader["type"])]


@dataclass
class SplitTotals:
    """Sums over the samples of one split (train or valid) since the last drain."""

    count: int = 0
    reward: float = 0.0
    latency: float = 0.0
    part_rewards: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    errors: dict[str, int] = field(default_factory=lambda: defaultdict(int))


class RewardLedger:
    """Per-split reward statistics, drained into one metric event per step."""

    def __init__(self, grader: dict[str, Any]) -> None:
        self.grader = grader
        self.parts = grader_parts(grader)
        self.totals: dict[str, SplitTotals] = {}

    def record(self, split: str, result: GradeResult) -> None:
        totals = self.totals.setdefault(split, SplitTotals())
        totals.count += 1
        totals.reward += result.reward
        totals.latency += result.execution_time
        for name, _ in self.parts:
            # a single grader's own reward is its part; a multi grader's parts are its sub-rewards
            value = result.sub_rewards.get(name, result.reward if len(self.parts) == 1 else 0.0)
            totals.part_rewards[name] += value
        for flag in ERROR_FLAGS:
            if result.errors.get(flag):
                totals.errors[flag] += 1

    def drain(self, split: str) -> SplitTotals | None:
        return self.totals.pop(split, None)


class GraderReward:
    """TRL reward function: `(prompts, completions, row_index, ...) -> rewards`, one per completion."""

    __name__ = "grader"  # TRL names the reward's metrics after the function

    def __init__(self, grader: dict[str, Any], items: list[dict[str, Any]], ledger: RewardLedger,
                 judge: Judge | None = None) -> None:  # fmt: skip
        self.grader = grader
        self.items = items
        self.ledger = ledger
        self.judge = judge  # score_model / label_model graders ask it, one sample at a time
        self.seconds = 0.0  # training-answer grading time of the current step (validation is timed as `eval`)

    def score(self, text: str, item: dict[str, Any], split: str) -> GradeResult:
        result = grade(self.grader, text, item, judge=self.judge)
        if split == "train":
            self.seconds += result.execution_time
        self.ledger.record(split, result)
        return result

    def __call__(self, prompts: list[Any], completions: list[Any], row_index: list[int], **_: Any) -> list[float]:
        return [self.score(_text(completion), self.items[index], "train").reward
                for completion, index in zip(completions, row_index, strict=True)]  # fmt: skip


def _text(completion: Any) -> str:
    """A completion as TRL hands it over: a string, or (conversational prompts) a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(message.get("content") or "") for message in completion)

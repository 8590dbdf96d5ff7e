"""Dropping weak teacher answers before they become training data: simple rules and, optionally, a grader.

Rules (each optional): `min_length` / `max_length` in characters, `must_match` / `must_not_match` regular
expressions (searched, with a time limit so a pathological pattern cannot hang a worker), `drop_truncated`
(default true: an answer cut off by max_completion_tokens would teach the student to stop mid-sentence).
An empty answer is always dropped. `grader` is any grader of openft.graders, scored against the prompt line
as `item` and the answer as the sample, kept when its reward reaches `pass_threshold`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import regex

from openft.evals.distill.prompts import Prompt
from openft.evals.distill.teacher import TeacherReply
from openft.graders import Judge, grade

REGEX_TIMEOUT_S = 1.0
RULE_KEYS = ("min_length", "max_length", "must_match", "must_not_match", "drop_truncated")
FILTER_KEYS = (*RULE_KEYS, "grader", "pass_threshold")


@dataclass(frozen=True)
class Verdict:
    keep: bool
    rule: str | None = None  # which rule dropped it: empty, truncated, min_length, ..., grader
    reason: str | None = None  # why, in words
    score: float | None = None  # the grader's reward, when there is a grader


def answer_text(reply: TeacherReply) -> str:
    """What rules and graders read: the text, or the tool calls as JSON when the answer is only calls."""
    content = reply.message.get("content")
    if isinstance(content, str) and content:
        return content
    calls = reply.message.get("tool_calls")
    return json.dumps([c["function"] for c in calls], ensure_ascii=False) if calls else ""


class AnswerFilter:
    def __init__(self, spec: dict[str, Any] | None, judge: Judge | None = None) -> None:
        self.spec = spec or {}
        self.judge = judge
        self.patterns = {key: regex.compile(self.spec[key]) for key in ("must_match", "must_not_match")
                         if self.spec.get(key)}  # fmt: skip

    @property
    def grader(self) -> dict[str, Any] | None:
        return self.spec.get("grader")

    def check_rules(self, reply: TeacherReply) -> Verdict:
        """The rules alone (free): keep, or drop naming the rule."""
        text = answer_text(reply)
        if not text.strip():
            return Verdict(False, "empty", "the teacher's answer is empty")
        if self.spec.get("drop_truncated", True) and reply.finish_reason == "length":
            return Verdict(False, "truncated", "the teacher hit max_completion_tokens (finish_reason=length)")
        if self.spec.get("min_length") is not None and len(text) < self.spec["min_length"]:
            return Verdict(False, "min_length", f"{len(text)} < {self.spec['min_length']} characters")
        if self.spec.get("max_length") is not None and len(text) > self.spec["max_length"]:
            return Verdict(False, "max_length", f"{len(text)} > {self.spec['max_length']} characters")
        for key, pattern in self.patterns.items():
            try:
                found = pattern.search(text, timeout=REGEX_TIMEOUT_S) is not None
            except TimeoutError:
                return Verdict(False, key, f"the pattern took longer than {REGEX_TIMEOUT_S:g} s on this answer")
            if key == "must_match" and not found:
                return Verdict(False, key, f"the answer does not match {self.spec[key]!r}")
            if key == "must_not_match" and found:
                return Verdict(False, key, f"the answer matches {self.spec[key]!r}")
        return Verdict(True)

    def check(self, prompt: Prompt, reply: TeacherReply) -> Verdict:
        """Rules first (free), then the grader (it may call a judge model)."""
        verdict = self.check_rules(reply)
        if not verdict.keep or self.grader is None:
            return verdict
        result = grade(self.grader, answer_text(reply), prompt.item, judge=self.judge)
        if result.errored:
            return Verdict(False, "grader_error", f"grader {result.name!r} failed: {result.reason}", result.reward)
        threshold = self.spec["pass_threshold"]
        if result.reward < threshold:
            return Verdict(False, "grader", f"grader {result.name!r} scored {result.reward:g} < pass_threshold "
                           f"{threshold:g}", result.reward)  # fmt: skip
        return Verdict(True, None, None, result.reward)

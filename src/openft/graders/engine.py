"""One grading engine: `grade(spec, output_text, item)` -> GradeResult, never raising for a grader that fails
on a sample. Failures are reported as OpenAI's `metadata.errors` flags with a score of 0."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openft.graders import formula, model_graders
from openft.graders.model_graders import Judge, JudgeParseError, JudgeReply
from openft.graders.python_grader import PythonGraderFailure, python_graders_enabled, run_python_grader
from openft.graders.spec import sub_graders
from openft.graders.templates import TemplateError, render, sample_namespace
from openft.graders.text_metrics import Embedder, similarity, string_check

ERROR_FLAGS = (
    "formula_parse_error", "invalid_variable_error", "model_grader_parse_error", "model_grader_refusal_error",
    "model_grader_server_error", "other_error", "python_grader_runtime_error", "python_grader_server_error",
    "sample_parse_error", "truncated_observation_error", "unresponsive_reward_error",
)  # fmt: skip

__all__ = ["GradeResult", "Judge", "JudgeReply", "grade"]


def no_errors() -> dict[str, Any]:
    return {**dict.fromkeys(ERROR_FLAGS, False), "model_grader_server_error_details": None,
            "python_grader_runtime_error_details": None, "python_grader_server_error_type": None}  # fmt: skip


@dataclass
class GradeResult:
    name: str
    type: str
    reward: float
    errors: dict[str, Any] = field(default_factory=no_errors)
    sub_rewards: dict[str, float] = field(default_factory=dict)
    execution_time: float = 0.0
    usage_per_model: dict[str, dict[str, int]] = field(default_factory=dict)
    reason: str | None = None  # what the grader saw or said: the judge's reply, the Python error, the comparison
    passed_label: str | None = None

    @property
    def errored(self) -> bool:
        return any(self.errors[flag] for flag in ERROR_FLAGS)

    def fail(self, flag: str, reason: str, details_key: str | None = None) -> GradeResult:
        self.errors[flag] = True
        if details_key:
            self.errors[details_key] = reason
        self.reward, self.reason = 0.0, reason
        return self

    def wire(self) -> dict[str, Any]:
        """OpenAI's graders/run response."""
        tokens = sum(u.get("total_tokens", 0) for u in self.usage_per_model.values())
        return {
            "reward": self.reward,
            "sub_rewards": dict(self.sub_rewards),
            "metadata": {
                "name": self.name, "type": self.type, "errors": dict(self.errors),
                "execution_time": round(self.execution_time, 6), "scores": dict(self.sub_rewards),
                "token_usage": tokens or None, "sampled_model_name": None,
            },
            "model_grader_token_usage_per_model": {m: dict(u) for m, u in self.usage_per_model.items()},
        }  # fmt: skip


def _add_usage(result: GradeResult, model: str, usage: dict[str, int]) -> None:
    zero = dict.fromkeys(("prompt_tokens", "completion_tokens", "total_tokens", "cached_tokens", "invocation_count"), 0)
    total = result.usage_per_model.setdefault(model, zero)
    prompt, completion = int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0)
    total["prompt_tokens"] += prompt
    total["completion_tokens"] += completion
    total["total_tokens"] += prompt + completion
    total["invocation_count"] += 1


def grade(
    spec: dict[str, Any],
    output_text: str,
    item: Any,
    *,
    judge: Judge | None = None,
    embedder: Callable[[], Embedder] | None = None,
) -> GradeResult:
    """Score `output_text` (the sample) against `item` with a checked grader spec (spec.check_grader)."""
    start = time.perf_counter()
    result = GradeResult(name=spec["name"], type=spec["type"], reward=0.0)
    namespaces = {"item": item if isinstance(item, dict) else {}, "sample": sample_namespace(output_text)}
    try:
        _grade_into(result, spec, output_text, item, namespaces, judge, embedder)
    except TemplateError as exc:
        result.fail(exc.kind, str(exc))
    except Exception as exc:  # noqa: BLE001 - a grader failing on one sample must not fail the run
        result.fail("other_error", f"{type(exc).__name__}: {exc}")
    result.execution_time = time.perf_counter() - start
    return result


def _grade_into(result, spec, output_text, item, namespaces, judge, embedder) -> None:
    kind = spec["type"]
    if kind == "string_check":
        text, reference = render(spec["input"], namespaces), render(spec["reference"], namespaces)
        result.reward = string_check(spec["operation"], text, reference)
        result.reason = f"{text[:200]!r} {spec['operation']} {reference[:200]!r}"
    elif kind == "text_similarity":
        text, reference = render(spec["input"], namespaces), render(spec["reference"], namespaces)
        result.reward = similarity(spec["evaluation_metric"], text, reference, embedder)
        result.reason = f"{spec['evaluation_metric']} of {text[:200]!r} against {reference[:200]!r}"
    elif kind == "python":
        if not python_graders_enabled():
            result.fail("python_grader_server_error", "Python graders are turned off on this server "
                        "(OPENFT_PYTHON_GRADERS=0).", "python_grader_server_error_type")
            return
        try:
            result.reward = run_python_grader(spec["source"], namespaces["sample"], item)
            result.reason = f"grade() returned {result.reward:g}"
        except PythonGraderFailure as failure:
            if failure.kind == "runtime":
                result.fail("python_grader_runtime_error", failure.details, "python_grader_runtime_error_details")
            else:
                result.fail("python_grader_server_error", failure.details, "python_grader_server_error_type")
    elif kind in ("score_model", "label_model"):
        _model_grade(result, spec, namespaces, judge)
    else:
        _multi(result, spec, output_text, item, judge, embedder)


def _model_grade(result: GradeResult, spec: dict[str, Any], namespaces: dict[str, Any], judge: Judge | None) -> None:
    messages = model_graders.judge_messages(spec, namespaces)
    if judge is None:
        result.fail("model_grader_server_error", "No judge model is available here.",
                    "model_grader_server_error_details")
        return
    try:
        reply = judge(spec["model"], messages, model_graders.sampling(spec))
    except Exception as exc:  # noqa: BLE001 - the judge's server failing is reported per sample
        result.fail("model_grader_server_error", f"{type(exc).__name__}: {exc}"[:1000],
                    "model_grader_server_error_details")
        return
    _add_usage(result, spec["model"], reply.usage)
    if reply.refusal:
        result.fail("model_grader_refusal_error", reply.refusal)
        return
    try:
        if spec["type"] == "score_model":
            result.reward = model_graders.parse_score(reply.text, spec.get("range") or [0, 1])
        else:
            label = model_graders.parse_label(reply.text, spec["labels"])
            result.passed_label = label
            result.reward = float(label in spec["passing_labels"])
    except JudgeParseError as exc:
        result.fail("model_grader_parse_error", str(exc))
        return
    result.reason = reply.text[:2000]


def _multi(result, spec, output_text, item, judge, embedder) -> None:
    graders = sub_graders(spec) or {}
    for name, sub_spec in graders.items():
        sub = grade(sub_spec, output_text, item, judge=judge, embedder=embedder)
        result.sub_rewards[name] = sub.reward
        for model, usage in sub.usage_per_model.items():
            for key, value in usage.items():
                result.usage_per_model.setdefault(model, dict.fromkeys(usage, 0))[key] += value
        if sub.errored:
            for flag, value in sub.errors.items():
                if value:
                    result.errors[flag] = value
            result.reward, result.reason = 0.0, f"{name}: {sub.reason}"
            return
    try:
        result.reward = formula.evaluate(formula.parse(spec["calculate_output"], graders), result.sub_rewards)
    except formula.FormulaError as exc:
        result.fail("formula_parse_error", str(exc))
        return
    result.reason = ", ".join(f"{n}={v:g}" for n, v in result.sub_rewards.items())

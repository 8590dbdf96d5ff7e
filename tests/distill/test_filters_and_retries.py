"""The pieces a distillation is made of, without a server: prompt checks, the filter's rules, retry waits,
the cache key, and the advisor's one-time teacher cost."""

from __future__ import annotations

import json
from decimal import Decimal

import httpx
import pytest

from openft.evals.distill.cache import cache_key
from openft.evals.distill.filters import AnswerFilter
from openft.evals.distill.prompts import PromptFileError, check_prompt, read_prompts
from openft.evals.distill.teacher import RetryPolicy, TeacherReply, backoff_seconds, retry_after_seconds


def reply(content, finish="stop") -> TeacherReply:
    return TeacherReply({"role": "assistant", "content": content}, finish, 10, 5)


@pytest.mark.parametrize("spec, content, finish, rule", [
    ({}, "   ", "stop", "empty"),
    ({}, "cut", "length", "truncated"),
    ({"drop_truncated": False}, "cut", "length", None),
    ({"min_length": 5}, "abc", "stop", "min_length"),
    ({"max_length": 2}, "abc", "stop", "max_length"),
    ({"must_match": r"^(positive|negative)$"}, "maybe", "stop", "must_match"),
    ({"must_match": r"^(positive|negative)$"}, "positive", "stop", None),
    ({"must_not_match": r"(?i)as an ai"}, "As an AI, I cannot", "stop", "must_not_match"),
])  # fmt: skip
def test_rules_name_what_dropped_an_answer(spec, content, finish, rule):
    verdict = AnswerFilter(spec).check_rules(reply(content, finish))
    assert verdict.keep is (rule is None) and verdict.rule == rule


def test_a_grader_reads_the_prompt_line_as_item():
    grader = {"type": "string_check", "name": "same", "input": "{{sample.output_text}}",
              "reference": "{{item.reference}}", "operation": "eq"}  # fmt: skip
    answer_filter = AnswerFilter({"grader": grader, "pass_threshold": 1.0})
    prompt, _ = check_prompt({"messages": [{"role": "user", "content": "q"}], "reference": "yes"}, 1)
    assert answer_filter.check(prompt, reply("yes")).keep
    dropped = answer_filter.check(prompt, reply("no"))
    assert dropped.rule == "grader" and dropped.score == 0.0


def test_retry_waits_honour_the_server_then_back_off_exponentially():
    assert retry_after_seconds(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert retry_after_seconds(httpx.Headers({"retry-after": "3"})) == 3.0
    assert retry_after_seconds(httpx.Headers({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})) == 0.0  # past
    assert retry_after_seconds(httpx.Headers({})) is None
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=30.0)
    assert backoff_seconds(policy, 0, 120.0) == 30.0  # a retry-after is honoured up to the cap
    assert 2.0 <= backoff_seconds(policy, 2, None) <= 4.0  # 1 s doubled twice, with jitter in the upper half
    assert backoff_seconds(policy, 10, None) <= 30.0


def test_the_cache_key_changes_with_teacher_prompt_and_sampling():
    body = {"model": "m", "messages": [{"role": "user", "content": "q"}], "max_completion_tokens": 8}
    remote = {"model": "m", "base_url": "https://api.example.com/v1/"}
    same = cache_key(remote, body)
    assert same == cache_key({"model": "m", "base_url": "https://API.example.com/v1"}, dict(reversed(body.items())))
    assert same != cache_key({"model": "m"}, body)  # a model openft serves is another teacher
    assert same != cache_key(remote, {**body, "temperature": 0})
    assert same != cache_key(remote, {**body, "messages": [{"role": "user", "content": "q2"}]})


def test_the_prompt_file_reports_every_bad_line(tmp_path):
    path = tmp_path / "prompts.jsonl"
    lines = [{"messages": [{"role": "user", "content": "ok"}]}, [1, 2],
             {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
             {"messages": [{"role": "system", "content": "only a system message"}]}]  # fmt: skip
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + "\n")
    with pytest.raises(PromptFileError) as caught:
        read_prompts(path)
    assert [(p.line, p.field) for p in caught.value.problems] == [
        (2, None), (3, "messages[1]"), (4, "messages[0].role")]
    path.write_text(json.dumps(lines[0]) + "\n\n")
    assert [p.line for p in read_prompts(path)] == [1]


def test_the_advisor_adds_the_teacher_cost_once():
    from openft.evals.advisor import AdviceSettings, advisor_inputs, training_run_from_results

    results = {"primary_metric": "exact_match", "strategies": [],
               "training": {"trained_tokens": 1_000_000, "seconds": 0.0, "teacher_cost_usd": 1.25}}  # fmt: skip
    run = training_run_from_results(results)
    assert run.teacher_cost == Decimal("1.25")
    inputs = advisor_inputs(results, AdviceSettings(hosted_training_model="gpt-4o-mini"), comparisons=[])
    without = advisor_inputs({**results, "training": {**results["training"], "teacher_cost_usd": None}},
                             AdviceSettings(hosted_training_model="gpt-4o-mini"), comparisons=[])  # fmt: skip
    assert inputs.hosted_training_cost - without.hosted_training_cost == Decimal("1.25")
    assert inputs.local_training_cost - without.local_training_cost == Decimal("1.25")

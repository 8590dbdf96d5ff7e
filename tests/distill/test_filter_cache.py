"""The filter's verdicts are cached beside the teacher's answers: a rerun of a distillation with the same model
grader makes zero judge calls (and zero teacher calls); another filter, or a grading that failed, is judged again.
Runs the runner's phases in-process against a fake teacher and a counting judge (no server, no model)."""

from __future__ import annotations

import asyncio

import pytest

from openft.evals.distill import objects
from openft.evals.distill.prompts import check_prompt
from openft.evals.distill.requests import CheckedRequest
from openft.evals.distill.runner import Distiller
from openft.evals.distill.teacher import CallStats, TeacherReply
from openft.graders.model_graders import JudgeReply
from openft.jobs import queue
from openft.jobs.settings import QueueSettings
from openft.store.accounts import get_or_create_organization
from openft.store.db import session_scope, upgrade_database

JUDGE = {"type": "score_model", "name": "judge", "model": "judge-model",
         "input": [{"role": "user", "content": "Rate: {{sample.output_text}}"}], "range": [0, 1]}  # fmt: skip
SETTINGS = QueueSettings(lease_seconds=30, max_per_organization=0)
QUESTIONS = ["good one", "bad one", "good again", "good again", "silent"]  # lines 3 and 4 are the same prompt


class FakeTeacher:
    """Answers "<question>!" at once ("" for "silent", which the free `empty` rule drops); counts its calls."""

    calls = 0

    def __init__(self) -> None:
        self.stats = CallStats()

    async def answer(self, body) -> TeacherReply:
        FakeTeacher.calls += 1
        question = body["messages"][-1]["content"]
        return TeacherReply({"role": "assistant", "content": "" if question == "silent" else f"{question}!"},
                            "stop", 5, 2)  # fmt: skip

    async def close(self) -> None:
        pass


class CountingJudge:
    """Scores 1 for answers saying "good", 0 otherwise; `fail_on` makes the judge's server fail for that text."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls, self.fail_on = 0, fail_on

    def __call__(self, model, messages, sampling) -> JudgeReply:
        self.calls += 1
        text = messages[0]["content"]
        if self.fail_on and self.fail_on in text:
            raise ConnectionError("the judge is down")
        return JudgeReply('{"result": 1}' if "good" in text else '{"result": 0}')


@pytest.fixture
def org_id(openft_home):
    FakeTeacher.calls = 0
    upgrade_database()
    with session_scope() as session:
        return get_or_create_organization(session, "distill-cache").id


def run_filter(org_id: str, monkeypatch, judge: CountingJudge, pass_threshold: float = 0.5):
    """One distillation's answer and filter phases; returns (verdicts by line, the job)."""
    config = {"input_file": "file-x", "teacher": {"model": "teacher", "base_url": "https://teacher.example/v1",
                                                   "price_model": "gpt-4o-mini"},
              "model": "student", "max_completion_tokens": 16, "concurrency": 4, "max_attempts": 1,
              "request_timeout": 5, "filter": {"drop_truncated": True, "grader": JUDGE,
                                               "pass_threshold": pass_threshold}}  # fmt: skip
    with session_scope() as session:
        row = objects.create(session, org_id, CheckedRequest(config, None, len(QUESTIONS)))
        row.status = "running"
    with session_scope() as session:
        lease = queue.claim(session, "worker", ["distillation"], SETTINGS)
    monkeypatch.setattr(Distiller, "_judge", lambda self, engines: judge)
    job = Distiller(lease, org_id, config, None, teacher_factory=FakeTeacher)
    prompts = [check_prompt({"messages": [{"role": "user", "content": q}]}, line)[0]
               for line, q in enumerate(QUESTIONS, start=1)]  # fmt: skip
    replies, failed, _ = asyncio.run(job.answer_all(prompts))
    assert not failed
    verdicts = asyncio.run(job.judge_all(prompts, replies))
    with session_scope() as session:
        queue.withdraw(session, row.id)
    return {line: (v.keep, v.rule) for line, v in verdicts.items()}, job


def test_a_rerun_with_the_same_grader_makes_no_judge_calls(org_id, monkeypatch):
    first_judge = CountingJudge()
    first, _ = run_filter(org_id, monkeypatch, first_judge)
    expected = {1: (True, None), 2: (False, "grader"), 3: (True, None), 4: (True, None), 5: (False, "empty")}
    assert first == expected
    assert first_judge.calls == 3  # the same prompt twice is judged once; the empty answer never reaches it
    assert FakeTeacher.calls == 4

    rerun_judge = CountingJudge()
    rerun, job = run_filter(org_id, monkeypatch, rerun_judge)
    assert rerun == expected and rerun_judge.calls == 0 and FakeTeacher.calls == 4  # no judge, no teacher
    assert job.verdicts_from_cache == 4  # lines 1-4; the rule's verdict on line 5 is free and not stored

    stricter_judge = CountingJudge()
    stricter, _ = run_filter(org_id, monkeypatch, stricter_judge, pass_threshold=0.9)
    assert stricter == expected and stricter_judge.calls == 3  # another filter is another verdict


def test_a_failed_grading_is_not_cached(org_id, monkeypatch):
    down = CountingJudge(fail_on="bad one")
    verdicts, _ = run_filter(org_id, monkeypatch, down)
    assert verdicts[2] == (False, "grader_error") and down.calls == 3
    again = CountingJudge()
    verdicts, job = run_filter(org_id, monkeypatch, again)
    assert verdicts[2] == (False, "grader") and again.calls == 1 and job.verdicts_from_cache == 3

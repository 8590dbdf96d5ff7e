"""The OpenAI eval run executor called directly (no server, no worker): samples, grades, counts, usage, cancel."""

from __future__ import annotations

import pytest

from openft.evals import openai_objects as objects
from openft.evals.openai_requests import check_data_source_config, check_testing_criteria
from openft.evals.openai_runs import execute_run
from openft.graders import JudgeReply
from openft.jobs.queue import active_task
from openft.store.accounts import get_or_create_organization
from openft.store.db import session_scope, upgrade_database
from openft.store.openai_eval_tables import OpenAIEvalOutputItem, OpenAIEvalRun

CONFIG = {"type": "custom", "item_schema": {"type": "object", "properties": {"question": {"type": "string"},
                                                                           "answer": {"type": "string"}}}}
CRITERIA = [
    {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}", "reference": "{{item.answer}}",
     "operation": "eq"},
    {"type": "score_model", "name": "judge", "model": "judge-model", "range": [0, 10], "pass_threshold": 5,
     "input": [{"role": "user", "content": "Grade {{sample.output_text}} against {{item.answer}}"}]},
]  # fmt: skip
ITEMS = [{"question": "2+2", "answer": "4"}, {"question": "3+3", "answer": "6"}, {"question": "1+1", "answer": "2"}]


@pytest.fixture
def org_id(openft_home):
    upgrade_database()
    with session_scope() as session:
        return get_or_create_organization(session, "runs-org").id


def make_run(org_id, data_source, criteria=CRITERIA):
    config = check_data_source_config(CONFIG)
    with session_scope() as session:
        evaluation = objects.create_eval(session, org_id, name="math", data_source_config=config,
                                         testing_criteria=check_testing_criteria(criteria, config), metadata=None)
        run = objects.create_run(session, evaluation, name=None, model=data_source.get("model", "jsonl"),
                                 data_source=data_source, metadata=None)  # fmt: skip
        assert active_task(session, run.id) is not None  # a durable task on the shared queue
        return evaluation.id, run.id


def fake_model(answers):
    calls = []

    def complete(body):
        calls.append(body)
        question = body["messages"][-1]["content"]
        return {"choices": [{"message": {"role": "assistant", "content": answers[question]}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}

    return complete, calls


def judge(model, messages, sampling):
    answer_ok = messages[0]["content"].split()[1] == messages[0]["content"].split()[-1]
    return JudgeReply('{"result": 9}' if answer_ok else '{"result": 2}', {"prompt_tokens": 20, "completion_tokens": 3})


def test_a_completions_run_samples_grades_and_counts(org_id):
    data_source = {"type": "completions", "model": "tiny", "source": {"type": "file_content",
                   "content": [{"item": item} for item in ITEMS]},
                   "input_messages": {"type": "template", "template": [
                       {"role": "developer", "content": "Answer with a number."},
                       {"role": "user", "content": "What is {{item.question}}?"}]},
                   "sampling_params": {"temperature": 0, "max_completion_tokens": 5, "seed": 7}}  # fmt: skip
    _, run_id = make_run(org_id, data_source)
    complete, calls = fake_model({"What is 2+2?": "4", "What is 3+3?": "7", "What is 1+1?": "2"})
    assert execute_run(run_id, complete=complete, judge=judge) == "completed"
    assert calls[0]["messages"][0] == {"role": "system", "content": "Answer with a number."}
    assert calls[0]["temperature"] == 0 and calls[0]["max_tokens"] == 5 and calls[0]["seed"] == 7
    with session_scope() as session:
        run = session.get(OpenAIEvalRun, run_id)
        assert run.status == "completed"
        assert run.result_counts == {"total": 3, "passed": 2, "failed": 1, "errored": 0}
        assert run.per_testing_criteria_results == [{"testing_criteria": "exact", "passed": 2, "failed": 1},
                                                    {"testing_criteria": "judge", "passed": 2, "failed": 1}]
        usage = {u["model_name"]: u for u in run.per_model_usage}
        assert usage["tiny"]["invocation_count"] == 3 and usage["tiny"]["total_tokens"] == 24
        assert usage["judge-model"]["invocation_count"] == 3 and usage["judge-model"]["prompt_tokens"] == 60
        items = session.query(OpenAIEvalOutputItem).filter_by(run_id=run_id).order_by(
            OpenAIEvalOutputItem.datasource_item_id).all()
        assert [i.status for i in items] == ["pass", "fail", "pass"]
        failed = items[1]
        assert failed.sample["output"] == [{"role": "assistant", "content": "7"}]
        assert failed.results[0]["reason"] == "'7' eq '6'" and failed.results[0]["passed"] is False
        assert failed.results[1]["score"] == 2.0 and failed.results[1]["reason"] == '{"result": 2}'


def test_a_jsonl_run_grades_the_given_samples_and_counts_errors(org_id):
    content = [{"item": ITEMS[0], "sample": {"output_text": "4"}},
               {"item": ITEMS[1], "sample": {"output_text": "six"}}]  # fmt: skip
    criteria = [CRITERIA[0], {"type": "python", "name": "numeric", "pass_threshold": 1,
                              "source": "def grade(sample, item):\n    return float(int(sample['output_text']) > 0)\n"}]
    _, run_id = make_run(org_id, {"type": "jsonl", "source": {"type": "file_content", "content": content}}, criteria)
    assert execute_run(run_id, complete=lambda body: {}, judge=judge) == "completed"
    with session_scope() as session:
        run = session.get(OpenAIEvalRun, run_id)
        assert run.result_counts == {"total": 2, "passed": 1, "failed": 0, "errored": 1}
        errored = session.query(OpenAIEvalOutputItem).filter_by(run_id=run_id, status="error").one()
        assert "ValueError" in errored.results[1]["reason"]


def test_a_cancelled_run_stops_after_the_current_item(org_id):
    eval_id, run_id = make_run(org_id, {"type": "jsonl", "source": {"type": "file_content", "content": [
        {"item": item, "sample": {"output_text": item["answer"]}} for item in ITEMS]}}, CRITERIA[:1])  # fmt: skip

    def cancel_after_first():
        with session_scope() as session:
            objects.cancel_run(session, session.get(OpenAIEvalRun, run_id))
        return False

    assert execute_run(run_id, complete=None, judge=judge, heartbeat=cancel_after_first) == "canceled"
    with session_scope() as session:
        run = session.get(OpenAIEvalRun, run_id)
        assert run.status == "canceled" and run.result_counts["total"] == 1
        assert active_task(session, run_id) is None  # withdrawn from the queue


def test_a_run_that_cannot_load_its_file_fails_with_the_reason(org_id):
    _, run_id = make_run(org_id, {"type": "jsonl", "source": {"type": "file_id", "id": "file-gone"}}, CRITERIA[:1])
    assert execute_run(run_id, complete=lambda body: {}, judge=judge) == "failed"
    with session_scope() as session:
        run = session.get(OpenAIEvalRun, run_id)
        assert run.error["code"] == "run_failed" and "file-gone" in run.error["message"]


def test_item_reference_messages_and_an_item_without_them(org_id):
    content = [{"item": {**ITEMS[0], "messages": [{"role": "user", "content": "What is 2+2?"}]}},
               {"item": ITEMS[1]}]  # fmt: skip
    data_source = {"type": "completions", "model": "tiny", "source": {"type": "file_content", "content": content},
                   "input_messages": {"type": "item_reference", "item_reference": "item.messages"}}  # fmt: skip
    _, run_id = make_run(org_id, data_source, CRITERIA[:1])
    complete, calls = fake_model({"What is 2+2?": "4"})
    assert execute_run(run_id, complete=complete, judge=judge) == "completed"
    assert calls[0]["messages"] == [{"role": "user", "content": "What is 2+2?"}]
    with session_scope() as session:
        run = session.get(OpenAIEvalRun, run_id)
        assert run.result_counts == {"total": 2, "passed": 1, "failed": 0, "errored": 1}
        errored = session.query(OpenAIEvalOutputItem).filter_by(run_id=run_id, status="error").one()
        assert errored.sample["error"]["code"] == "invalid_input_messages"


def test_run_sampling_accepts_structured_outputs_and_names_an_unsupported_schema_keyword():
    from openft.evals.openai_requests import OpenAIEvalRequestError, check_sampling

    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"],
              "additionalProperties": False}
    fmt = {"type": "json_schema", "json_schema": {"name": "reply", "schema": schema, "strict": True}}
    assert check_sampling({"response_format": fmt})["response_format"] == fmt
    bad = {"type": "json_schema", "json_schema": {"name": "reply", "schema": {
        "type": "object", "properties": {"answer": {"type": "string", "minLength": 3}}}}}
    with pytest.raises(OpenAIEvalRequestError) as refused:
        check_sampling({"response_format": bad})
    assert "minLength" in str(refused.value)
    assert refused.value.param == "data_source.sampling_params.response_format.json_schema.schema"

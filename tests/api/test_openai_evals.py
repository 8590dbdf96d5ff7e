"""The unchanged `openai` SDK against a live openft: graders run/validate, evals, runs on the shared worker,
output items; every response parses in the SDK's own types (validated strictly, not just constructed)."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest
from openai.types import EvalCreateResponse, EvalListResponse, EvalRetrieveResponse, EvalUpdateResponse
from openai.types.evals import RunCreateResponse, RunListResponse, RunRetrieveResponse
from openai.types.evals.runs import OutputItemListResponse, OutputItemRetrieveResponse
from openai.types.fine_tuning.alpha import GraderRunResponse, GraderValidateResponse

from tests.fixtures.server import register_model, start_server, stop_server

STRING_CHECK = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}", "operation": "eq"}  # fmt: skip
SIMILAR = {"type": "text_similarity", "name": "close", "input": "{{sample.output_text}}",
           "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match", "pass_threshold": 0.5}  # fmt: skip
ITEMS = [{"question": "Capital of France?", "answer": "Paris"}, {"question": "Capital of Peru?", "answer": "Lima"}]


def strict(model_type, obj):
    """Validate the wire JSON with the SDK's pydantic model (the SDK itself only constructs, leniently)."""
    raw = obj.model_dump(mode="json", by_alias=True, exclude_unset=True) if hasattr(obj, "model_dump") else obj
    # OpenAI itself sends `"error": null` on runs and samples without an error while the SDK's type says object:
    # openft does the same, so only that one field is relaxed here.
    for holder in (raw, raw.get("sample") or {}):
        if "error" in holder and holder["error"] is None:
            holder["error"] = {"code": "", "message": ""}
    return model_type.model_validate(raw)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory, tiny_model_dir):
    """Like the shared live server, but allowed to call itself: the judge-endpoint test registers this very
    server as an organization's OpenAI-compatible judge."""
    home = tmp_path_factory.mktemp("openft-oai-evals")
    register_model(home, "tiny-llama", tiny_model_dir)
    server = start_server(home, {"OPENFT_VALIDATION_MODEL": "tiny-llama", "OPENFT_OUTBOUND_ALLOW": "127.0.0.1"})
    yield server
    stop_server(server)


@pytest.fixture(scope="module")
def key(live_server):
    return live_server.create_key("oai-evals")


@pytest.fixture(scope="module")
def client(live_server, key):
    return live_server.client(key, timeout=120)


def test_graders_validate_and_run(client):
    validated = client.fine_tuning.alpha.graders.validate(grader=STRING_CHECK)
    strict(GraderValidateResponse, validated)
    assert validated.grader.name == "exact"

    ran = client.fine_tuning.alpha.graders.run(grader=STRING_CHECK, model_sample="Paris", item={"answer": "Paris"})
    strict(GraderRunResponse, ran)
    assert ran.reward == 1.0 and ran.metadata.errors.python_grader_runtime_error is False

    multi = {"type": "multi", "name": "m", "calculate_output": "0.25 * exact + 0.75 * close",
             "graders": {"exact": STRING_CHECK, "close": {k: v for k, v in SIMILAR.items() if k != "pass_threshold"}}}
    ran = client.fine_tuning.alpha.graders.run(grader=multi, model_sample="Lima", item={"answer": "Lime"})
    strict(GraderRunResponse, ran)
    assert ran.reward == pytest.approx(0.75 * 0.75) and ran.sub_rewards == {"exact": 0.0, "close": 0.75}


def test_a_failing_python_grader_is_reported_in_metadata_errors(client):
    source = "def grade(sample, item):\n    return sample['output_json']['x']\n"
    grader = {"type": "python", "name": "py", "source": source}
    ran = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="not json", item={})
    strict(GraderRunResponse, ran)
    assert ran.reward == 0.0 and ran.metadata.errors.python_grader_runtime_error
    assert "KeyError" in ran.metadata.errors.python_grader_runtime_error_details
    ran = client.fine_tuning.alpha.graders.run(grader=grader, model_sample='{"x": 0.5}', item={})
    assert ran.reward == 0.5


def test_a_model_judge_served_by_openft(client):
    grader = {"type": "score_model", "name": "judge", "model": "tiny-llama", "range": [0, 1],
              "sampling_params": {"max_completions_tokens": 8, "seed": 1},
              "input": [{"role": "user", "content": "Score {{sample.output_text}}"}]}  # fmt: skip
    ran = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="hi", item={})
    strict(GraderRunResponse, ran)
    errors = ran.metadata.errors
    assert not errors.model_grader_server_error, errors.model_grader_server_error_details
    usage = ran.model_grader_token_usage_per_model["tiny-llama"]
    assert usage["prompt_tokens"] > 0 and usage["invocation_count"] == 1  # the tiny model really answered
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.alpha.graders.run(grader={**grader, "model": "gpt-9"}, model_sample="hi")


def test_a_judge_on_an_endpoint_the_organization_registered(live_server, client, key):
    import httpx

    api = httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60)
    refused = api.post("/fine_tuning/alpha/graders/judge_endpoints",
                       json={"model": "x", "base_url": "http://10.1.2.3/v1", "api_key": "k"})
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "base_url"
    created = api.post("/fine_tuning/alpha/graders/judge_endpoints", json={
        "model": "house-judge", "remote_model": "tiny-llama", "base_url": live_server.base_url, "api_key": key})
    assert created.status_code == 200, created.text
    listed = api.get("/fine_tuning/alpha/graders/judge_endpoints").json()["data"]
    assert [row["model"] for row in listed] == ["house-judge"] and "api_key" not in listed[0]  # never sent back

    grader = {"type": "label_model", "name": "tone", "model": "house-judge", "labels": ["good", "bad"],
              "passing_labels": ["good"], "input": [{"role": "user", "content": "Is {{sample.output_text}} good?"}]}
    ran = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="fine", item={})
    strict(GraderRunResponse, ran)
    assert not ran.metadata.errors.model_grader_server_error, ran.metadata.errors.model_grader_server_error_details
    assert ran.model_grader_token_usage_per_model["house-judge"]["invocation_count"] == 1
    assert api.delete("/fine_tuning/alpha/graders/judge_endpoints/house-judge").json()["deleted"] is True
    with pytest.raises(openai.NotFoundError):
        client.fine_tuning.alpha.graders.validate(grader=grader)


@pytest.mark.parametrize(
    ("grader", "param"),
    [({**STRING_CHECK, "operation": "regex"}, "grader.operation"),
     ({"type": "python", "name": "p", "source": "def grade(:"}, "grader.source"),
     ({"type": "label_model", "name": "l", "model": "tiny-llama", "labels": ["a"], "passing_labels": ["b"],
       "input": [{"role": "user", "content": "x"}]}, "grader.passing_labels")],
)  # fmt: skip
def test_bad_grader_json_is_a_400_naming_the_field(client, grader, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.alpha.graders.validate(grader=grader)
    assert error.value.status_code == 400 and error.value.body["param"] == param


def wait(client, eval_id, run_id, timeout=180):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.evals.runs.retrieve(run_id, eval_id=eval_id)
        if run.status in ("completed", "failed", "canceled"):
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} still {run.status} after {timeout} s")


@pytest.fixture(scope="module")
def evaluation(client):
    created = client.evals.create(
        name="capitals",
        data_source_config={"type": "custom", "include_sample_schema": True, "item_schema": {
            "type": "object", "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
            "required": ["question", "answer"]}},
        testing_criteria=[STRING_CHECK, SIMILAR],
        metadata={"team": "geo"},
    )  # fmt: skip
    strict(EvalCreateResponse, created)
    return created


def test_evals_create_retrieve_update_list(client, evaluation):
    assert evaluation.id.startswith("eval_") and evaluation.data_source_config.type == "custom"
    assert evaluation.data_source_config.schema_["required"] == ["item", "sample"]
    strict(EvalRetrieveResponse, client.evals.retrieve(evaluation.id))
    updated = client.evals.update(evaluation.id, name="capitals v2", metadata={"team": "maps"})
    strict(EvalUpdateResponse, updated)
    assert updated.name == "capitals v2" and updated.metadata == {"team": "maps"}
    page = client.evals.list(limit=10)
    for row in page.data:
        strict(EvalListResponse, row)
    assert evaluation.id in [row.id for row in page.data]


def test_a_completions_run_against_a_served_model(client, evaluation):
    run = client.evals.runs.create(
        evaluation.id,
        name="tiny",
        data_source={
            "type": "completions", "model": "tiny-llama",
            "source": {"type": "file_content", "content": [{"item": item} for item in ITEMS]},
            "input_messages": {"type": "template", "template": [
                {"role": "developer", "content": "Answer with the city only."},
                {"role": "user", "content": "{{item.question}}"}]},
            "sampling_params": {"temperature": 0, "max_completion_tokens": 4, "seed": 3},
        },
    )  # fmt: skip
    strict(RunCreateResponse, run)
    assert run.status == "queued" and f"/ui/#/evals/{evaluation.id}/runs/{run.id}" in run.report_url
    done = wait(client, evaluation.id, run.id)
    strict(RunRetrieveResponse, done)
    assert done.status == "completed", done.error
    assert done.result_counts.total == 2 and done.result_counts.errored == 0
    assert [r.testing_criteria for r in done.per_testing_criteria_results] == ["exact", "close"]
    usage = {u.run_model_name: u for u in done.per_model_usage}
    assert usage["tiny-llama"].invocation_count == 2 and usage["tiny-llama"].completion_tokens > 0

    items = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id)
    assert len(items.data) == 2
    for item in items.data:
        strict(OutputItemListResponse, item)
        assert item.sample.model == "tiny-llama" and item.sample.usage.total_tokens > 0
        assert {r.name for r in item.results} == {"exact", "close"}
        assert all(r.model_extra.get("reason") for r in item.results)  # the grader's reason, for the dashboard
    one = client.evals.runs.output_items.retrieve(items.data[0].id, eval_id=evaluation.id, run_id=run.id)
    strict(OutputItemRetrieveResponse, one)
    for row in client.evals.runs.list(evaluation.id).data:
        strict(RunListResponse, row)

    with pytest.raises(openai.BadRequestError):
        client.evals.runs.cancel(run.id, eval_id=evaluation.id)  # already completed


def test_a_jsonl_run_from_an_uploaded_file(client, evaluation):
    lines = [{"item": ITEMS[0], "sample": {"output_text": "Paris", "model": "gpt-4o-mini"}},
             {"item": ITEMS[1], "sample": {"output_text": "Lim", "model": "gpt-4o-mini"}}]  # fmt: skip
    data = "\n".join(json.dumps(line) for line in lines).encode()
    file = client.files.create(file=("graded.jsonl", io.BytesIO(data)), purpose="evals")
    run = client.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": {"type": "file_id",
                                                                                          "id": file.id}})
    done = wait(client, evaluation.id, run.id)
    assert done.status == "completed" and done.result_counts.passed == 1 and done.result_counts.failed == 1
    results = {r.testing_criteria: (r.passed, r.failed) for r in done.per_testing_criteria_results}
    assert results == {"exact": (1, 1), "close": (2, 0)}  # "Lim" vs "Lima": fuzzy 0.857 >= 0.5
    failing = client.evals.runs.output_items.list(run.id, eval_id=evaluation.id, status="fail")
    assert [item.datasource_item["answer"] for item in failing.data] == ["Lima"]
    deleted = client.evals.runs.delete(run.id, eval_id=evaluation.id)
    assert deleted.deleted and deleted.run_id == run.id


@pytest.mark.parametrize(
    ("data_source", "param"),
    [({"type": "responses", "source": {"type": "file_content", "content": []}}, "data_source.type"),
     ({"type": "jsonl", "source": {"type": "file_content", "content": [{"item": {"question": "q"}}]}},
      "data_source.source.content[0].item"),
     ({"type": "completions", "model": "tiny-llama", "source": {"type": "file_content", "content": [
         {"item": ITEMS[0]}]}, "input_messages": {"type": "template", "template": [
         {"role": "user", "content": "{{item.question}}"}]}, "sampling_params": {"reasoning_effort": "high"}},
      "data_source.sampling_params.reasoning_effort")],
)  # fmt: skip
def test_bad_runs_are_a_400_naming_the_parameter(client, evaluation, data_source, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.evals.runs.create(evaluation.id, data_source=data_source)
    assert error.value.body["param"] == param


def test_a_run_on_a_model_the_organization_cannot_use_is_a_404(client, evaluation):
    with pytest.raises(openai.NotFoundError) as error:
        client.evals.runs.create(evaluation.id, data_source={
            "type": "completions", "model": "ft:tiny-llama:someone-else::abcd1234",
            "source": {"type": "file_content", "content": [{"item": ITEMS[0]}]},
            "input_messages": {"type": "item_reference", "item_reference": "item.messages"}})  # fmt: skip
    assert error.value.body["param"] == "data_source.model" and error.value.body["code"] == "model_not_found"


def test_refused_configs_and_criteria_say_why(client):
    with pytest.raises(openai.BadRequestError) as error:
        client.evals.create(data_source_config={"type": "logs"}, testing_criteria=[STRING_CHECK])
    assert error.value.body["param"] == "data_source_config.type" and "does not log" in error.value.message
    with pytest.raises(openai.BadRequestError) as error:
        client.evals.create(data_source_config={"type": "custom", "item_schema": {"type": "object"}},
                            testing_criteria=[{**SIMILAR, "pass_threshold": None}])
    assert error.value.body["param"] == "testing_criteria[0].pass_threshold"


def test_another_organization_sees_nothing(live_server, client, evaluation):
    other = live_server.client(live_server.create_key("other-org"))
    with pytest.raises(openai.NotFoundError):
        other.evals.retrieve(evaluation.id)
    assert evaluation.id not in [row.id for row in other.evals.list().data]


def test_delete_an_eval(client):
    created = client.evals.create(data_source_config={"type": "custom", "item_schema": {"type": "object"}},
                                  testing_criteria=[STRING_CHECK])
    deleted = client.evals.delete(created.id)
    assert deleted.deleted and deleted.eval_id == created.id
    with pytest.raises(openai.NotFoundError):
        client.evals.retrieve(created.id)


def test_the_cli_runs_graders_and_evals(live_server, key, evaluation, tmp_path):
    from typer.testing import CliRunner

    from openft.cli import app

    env = {"OPENFT_BASE_URL": live_server.base_url, "OPENFT_API_KEY": key, "COLUMNS": "200"}

    def cli(*args):
        return CliRunner().invoke(app, list(args), env=env)

    grader_file = tmp_path / "grader.json"
    grader_file.write_text(json.dumps(STRING_CHECK))
    ran = cli("graders", "run", str(grader_file), "--sample", "Paris", "--item", '{"answer": "Paris"}')
    assert ran.exit_code == 0 and "reward 1" in ran.stdout, ran.output
    bad = cli("graders", "validate", json.dumps({**STRING_CHECK, "operation": "regex"}))
    assert bad.exit_code == 1 and "grader.operation" in bad.output

    source = {"type": "jsonl", "source": {"type": "file_content", "content": [
        {"item": ITEMS[0], "sample": {"output_text": "Paris"}}, {"item": ITEMS[1], "sample": {"output_text": "Rome"}}]}}
    run = cli("evals", "run", evaluation.id, json.dumps(source), "--wait")
    assert run.exit_code == 0, run.output
    assert "total 2: passed 1, failed 1, errored 0" in run.stdout and "exact: 1/2 passed (50%)" in run.stdout
    run_id = run.stdout.split()[0]
    failing = cli("evals", "items", evaluation.id, run_id, "--status", "fail")
    assert failing.exit_code == 0 and "'Rome' eq 'Lima'" in failing.stdout, failing.output
    listed = cli("evals", "list")
    assert evaluation.id in listed.stdout

"""Reinforcement fine-tuning through the unchanged `openai` SDK against a live server training the tiny model."""

from __future__ import annotations

import io
import json
import time

import openai
import pytest
from openai.types.evals import RunListResponse
from openai.types.fine_tuning import FineTuningJob

TERMINAL = {"succeeded", "failed", "cancelled"}
GRADER = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
          "reference": "{{item.answer}}", "operation": "eq"}  # fmt: skip
# The tiny model judging through openft's in-process engine; few tokens keep sequential judging quick.
JUDGE = {"type": "score_model", "name": "judge", "model": "tiny-llama", "range": [0, 1],
         "sampling_params": {"max_completions_tokens": 8},
         "input": [{"role": "user", "content": "Score {{sample.output_text}} against {{item.answer}}."}]}  # fmt: skip


def prompts(n: int, *, answered: bool = False) -> bytes:
    rows = []
    for i in range(n):
        messages = [{"role": "developer", "content": "Answer with the number only."},
                    {"role": "user", "content": f"What is {i} + 1?"}]  # fmt: skip
        if answered:
            messages.append({"role": "assistant", "content": str(i + 1)})
        rows.append({"messages": messages, "answer": str(i + 1)})
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


@pytest.fixture(scope="module")
def client(live_server):
    return live_server.client(live_server.create_key("acme"), timeout=60)


@pytest.fixture(scope="module")
def files(client):
    def upload(name: str, data: bytes) -> str:
        uploaded = client.files.create(file=(name, io.BytesIO(data)), purpose="fine-tune")
        return client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60).id

    return {"train": upload("train.jsonl", prompts(10)), "valid": upload("valid.jsonl", prompts(2)),
            "answered": upload("answered.jsonl", prompts(10, answered=True))}  # fmt: skip


def rft_method(grader=GRADER, **hyperparameters) -> dict:
    tiny = {"n_epochs": 1, "batch_size": 5, "compute_multiplier": 0.5, "max_completion_length": 4, "eval_interval": 2}
    section = {"grader": grader, "hyperparameters": {**tiny, **hyperparameters}}
    return {"type": "reinforcement", "reinforcement": section}


def wait_for(client, job_id: str, timeout: float = 240, until: set[str] = TERMINAL):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in until | TERMINAL:
            return job
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} stuck in {job.status}")


def test_rft_job_with_a_model_judge_pauses_resumes_and_serves_the_model(client, files):
    """One job (each costs CI time) shows a score_model reward, pause, resume and serving."""
    upload = client.files.retrieve(files["train"])
    assert upload.status == "processed"
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=files["train"],
                                         validation_file=files["valid"], suffix="numbers",
                                         method=rft_method(grader=JUDGE))  # fmt: skip
    assert job.method.type == "reinforcement" and job.method.reinforcement.grader.type == "score_model"

    # Paused while its training process starts: it stops after step 1 of 2 with a checkpoint to resume from.
    assert wait_for(client, job.id, until={"running"}).status == "running"
    client.fine_tuning.jobs.pause(job.id)
    paused = wait_for(client, job.id, until={"paused"})
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert paused.status == "paused" and paused.fine_tuned_model is None, (paused.error, messages)
    kept = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in kept] == [1], messages
    client.fine_tuning.jobs.resume(job.id)

    done = wait_for(client, job.id)
    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    assert done.status == "succeeded", (done.error, [e.message for e in events])
    assert any(e.message == "Resuming fine-tuning from checkpoint at step 1" for e in events)
    FineTuningJob.model_validate(client.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json())
    assert done.method.reinforcement.hyperparameters.compute_multiplier == 0.5

    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [2, 1]  # 10 prompts / batch 5, newest first
    last = metrics[0].data
    assert 0 <= last["train_reward_mean"] <= 1 and 0 <= last["valid_reward_mean"] <= 1
    scores = last["scores"]["graders"]
    assert [(g["name"], g["type"]) for g in scores] == [("judge", "score_model")]
    assert all(0 <= g["train_reward_mean"] <= 1 and 0 <= g["valid_reward_mean"] <= 1 for g in scores)
    # Every answer went to the judge and got a reply (the tiny random judge's replies are rarely a number, so
    # they mostly count as model_grader_parse_error and score 0); none failed to reach it.
    for grader in last["errors"]["graders"]:
        assert not grader.get("train_model_grader_server_error_count"), grader
        assert not grader.get("valid_model_grader_server_error_count"), grader
    assert last["timing"]["graders"][0]["train_execution_latency_mean"] > 0
    assert set(last["timing"]["step"]) == {"sampling", "training", "eval", "full_iteration"}
    assert metrics[0].message.startswith("Step 2/2, train mean reward=")

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert checkpoints and checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-2"
    assert "valid_reward_mean" in checkpoints[0].metrics.model_dump()

    evaluation = client.evals.retrieve("eval_" + job.id.removeprefix("ftjob-"))
    assert evaluation.metadata == {"fine_tuning_job_id": job.id}
    runs = client.evals.runs.list(evaluation.id).data
    assert [r.name for r in runs] == ["step 2"] and isinstance(runs[0], RunListResponse)
    assert runs[0].result_counts.total == 2
    items = client.evals.runs.output_items.list(runs[0].id, eval_id=evaluation.id).data
    assert {i.datasource_item["answer"] for i in items} == {"1", "2"}
    for item in items:
        result = item.results[0].model_dump()
        assert not result["metadata"]["errors"]["model_grader_server_error"], result
        assert result.get("reason")  # the judge's reply, or why it could not be read as a score

    for model in (done.fine_tuned_model, checkpoints[0].fine_tuned_model_checkpoint):
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "What is 2 + 1?"}],
                                               max_tokens=3, temperature=0)  # fmt: skip
        assert reply.choices[0].message.content is not None


def test_a_running_rft_job_can_be_cancelled(client, files):
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=files["train"], method=rft_method())
    assert wait_for(client, job.id, until={"running"}).status == "running"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    time.sleep(1)  # the worker kills the training process; nothing it wrote afterwards may revive the job
    cancelled = client.fine_tuning.jobs.retrieve(job.id)
    assert cancelled.status == "cancelled" and cancelled.fine_tuned_model is None
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=100)]
    assert messages[0] == "Fine-tuning job cancelled", messages
    assert not any("fine-tuned model" in m.lower() for m in messages), messages


def test_an_rft_judge_must_be_served_or_registered_by_the_organization(client, files):
    multi = {"type": "multi", "name": "both", "calculate_output": "exact + tone",
             "graders": {"exact": GRADER, "tone": {"type": "label_model", "name": "tone", "model": "gpt-4o",
                         "labels": ["good", "bad"], "passing_labels": ["good"], "input": JUDGE["input"]}}}  # fmt: skip
    for grader, param in [({**JUDGE, "model": "no-such-judge"}, "method.reinforcement.grader.model"),
                          (multi, "method.reinforcement.grader.graders.tone.model")]:  # fmt: skip
        with pytest.raises(openai.BadRequestError) as caught:
            client.fine_tuning.jobs.create(model="tiny-llama", training_file=files["train"],
                                           method=rft_method(grader=grader))  # fmt: skip
        assert caught.value.body["param"] == param, caught.value.body

    # A judge on an endpoint the organization registered is accepted (it is called when the job trains).
    client.post("/fine_tuning/alpha/graders/judge_endpoints", cast_to=object, body={
        "model": "house-judge", "remote_model": "judge-70b", "base_url": "https://8.8.8.8/v1", "api_key": "k"})
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=files["train"],
                                         method=rft_method(grader={**JUDGE, "model": "house-judge"}))  # fmt: skip
    assert job.method.reinforcement.grader.model == "house-judge"
    client.fine_tuning.jobs.cancel(job.id)


@pytest.mark.parametrize(
    ("method", "param"),
    [
        (rft_method(grader={**GRADER, "operation": "equals"}), "method.reinforcement.grader.operation"),
        (rft_method(grader={"type": "python", "name": "p", "source": "def f(): pass"}),
         "method.reinforcement.grader.source"),
        (rft_method(grader={"type": "label_model", "name": "l", "model": "tiny-llama", "labels": ["a"],
                            "passing_labels": ["a"], "input": JUDGE["input"]}),
         "method.reinforcement.grader.type"),  # OpenAI's RFT takes a label_model only inside a multi grader
        (rft_method(reasoning_effort="high"), "method.reinforcement.hyperparameters.reasoning_effort"),
        (rft_method(compute_multiplier=11), "method.reinforcement.hyperparameters.compute_multiplier"),
        (rft_method(packing=True), "method.reinforcement.hyperparameters.packing"),
        ({"type": "reinforcement", "reinforcement": {"hyperparameters": {}}}, "method.reinforcement.grader"),
        ({"type": "reinforcement", "reinforcement": {"grader": GRADER, "response_format": {"type": "json_object"}}},
         "method.reinforcement.response_format"),
    ],
)
def test_bad_rft_requests_are_400s_naming_the_parameter(client, files, method, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=files["train"], method=method)
    assert caught.value.body["param"] == param, caught.value.body


def test_default_reasoning_effort_is_accepted(client, files):
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=files["train"],
                                         method=rft_method(reasoning_effort="default"))  # fmt: skip
    client.fine_tuning.jobs.cancel(job.id)


def test_answered_chat_data_is_refused_for_rft_and_a_stray_answer_at_upload(client, files):
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=files["answered"], method=rft_method())
    assert caught.value.body["param"] == "training_file"
    assert "must end with a user or developer message" in caught.value.body["message"]

    mixed = prompts(10) + prompts(1, answered=True)  # one line ends with the assistant's answer
    uploaded = client.files.create(file=("mixed.jsonl", io.BytesIO(mixed)), purpose="fine-tune")
    assert client.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60).status == "error"
    with pytest.raises(openai.BadRequestError) as caught:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=uploaded.id, method=rft_method())
    assert caught.value.body["param"] == "training_file"

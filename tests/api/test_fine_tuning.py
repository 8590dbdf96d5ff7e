"""Fine-tuning jobs through the unchanged `openai` SDK against a live server training a tiny model."""

from __future__ import annotations

import csv
import io
import json
import time

import httpx
import openai
import pytest
from openai.types.fine_tuning import FineTuningJob

from tests.fixtures.server import register_model, start_server, stop_server

TERMINAL = {"succeeded", "failed", "cancelled"}


def examples(n: int) -> bytes:
    rows = [
        {"messages": [{"role": "user", "content": f"Code for item {i}?"},
                      {"role": "assistant", "content": f"ITEM-{i:03d}"}]}
        for i in range(n)
    ]
    return b"".join(json.dumps(r).encode() + b"\n" for r in rows)


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("openft-jobs")
    register_model(home, "tiny-llama", tiny_model_dir)
    live = start_server(home, {"OPENFT_VALIDATION_MODEL": "tiny-llama"})
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def client(server):
    return server.client(server.create_key("acme"), timeout=60)


@pytest.fixture(scope="module")
def training_file(client):
    return client.files.create(file=("train.jsonl", io.BytesIO(examples(12))), purpose="fine-tune").id


def wait_for(client, job_id: str, statuses: set[str], timeout: float = 240) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        time.sleep(0.3)
    events = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=50)]
    raise AssertionError(f"job {job_id} stuck in {job.status}; events: {events}")


def wait_for_step(client, job_id: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(e.type == "metrics" for e in client.fine_tuning.jobs.list_events(job_id, limit=5)):
            return
        time.sleep(0.2)
    raise AssertionError("no training step was reported")


def test_job_runs_to_a_fine_tuned_model(client, server, training_file):
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=training_file, suffix="codes", seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
        metadata={"team": "search"},
    )
    assert job.status == "validating_files"
    assert job.hyperparameters.learning_rate_multiplier == "auto"

    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "succeeded", done.error
    assert done.fine_tuned_model.startswith("ft:tiny-llama:acme:codes:")
    assert done.hyperparameters.n_epochs == 2 and done.hyperparameters.batch_size == 4
    assert isinstance(done.hyperparameters.learning_rate_multiplier, float)
    assert done.trained_tokens > 0 and done.finished_at >= done.created_at
    raw = client.fine_tuning.jobs.with_raw_response.retrieve(job.id).http_response.json()
    FineTuningJob.model_validate(raw)
    assert raw["error"] is None

    events = list(client.fine_tuning.jobs.list_events(job.id, limit=100))
    messages = [e.message for e in events]
    assert messages[0] == "The job has successfully completed"  # newest first
    assert "Files validated, moving job to queued state" in messages
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics and {"step", "train_loss", "total_steps"} <= set(metrics[0].data)
    assert metrics[-1].data["step"] == 1

    checkpoints = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert [c.step_number for c in checkpoints] == [6, 3]  # one per epoch, newest first
    assert checkpoints[0].fine_tuned_model_checkpoint == f"{done.fine_tuned_model}:ckpt-step-6"
    assert "train_loss" in checkpoints[0].metrics.model_dump()

    results = client.files.content(done.result_files[0]).read().decode()
    rows = list(csv.DictReader(io.StringIO(results)))
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert len(rows) == 6 and rows[-1]["step"] == "6"
    assert client.files.retrieve(done.result_files[0]).purpose == "fine-tune-results"

    assert done.fine_tuned_model in [m.id for m in client.models.list()]
    assert client.models.retrieve(done.fine_tuned_model).owned_by == "acme"
    assert client.models.retrieve(checkpoints[0].fine_tuned_model_checkpoint).id.endswith(":ckpt-step-6")
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "search"})] == [job.id]
    assert [j.id for j in client.fine_tuning.jobs.list(metadata={"team": "other"})] == []

    other = server.client(server.create_key("rival"))
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(done.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(job.id)

    deleted = client.models.delete(done.fine_tuned_model)
    assert deleted.deleted
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(done.fine_tuned_model)
    assert client.files.retrieve(training_file).status == "processed"  # the upload is untouched


def test_pause_and_resume_a_running_job(client, training_file):
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=training_file, seed=1,
        # 360 steps: long enough that the pause lands while it runs, now that a tiny-model step takes ~30 ms
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 30, "batch_size": 1}}},
    )
    wait_for(client, job.id, {"running"})
    wait_for_step(client, job.id)
    client.fine_tuning.jobs.pause(job.id)
    paused = wait_for(client, job.id, {"paused"} | TERMINAL)
    assert paused.status == "paused"
    saved = list(client.fine_tuning.jobs.checkpoints.list(job.id))
    assert saved, "pausing saves a checkpoint to resume from"
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    done = wait_for(client, job.id, TERMINAL)
    assert done.status == "succeeded", done.error
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=500)]
    assert any(m.startswith("Resuming fine-tuning from checkpoint at step") for m in messages)
    steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=500) if e.type == "metrics"]
    assert max(steps) == 360


def test_cancel_a_running_job(client, training_file):
    job = client.fine_tuning.jobs.create(
        model="tiny-llama", training_file=training_file,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 50, "batch_size": 1}}},
    )
    wait_for(client, job.id, {"running"})
    wait_for_step(client, job.id)
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled"
    time.sleep(2)
    after = client.fine_tuning.jobs.retrieve(job.id)
    assert after.status == "cancelled" and after.fine_tuned_model is None
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.cancel(job.id)


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"model": "no-such-model"}, "model"),
        ({"training_file": "file-unknown"}, "training_file"),
        ({"suffix": "has:colon"}, "suffix"),
        ({"suffix": 123}, "suffix"),
        ({"seed": -1}, "seed"),
        ({"metadata": {f"k{i}": "v" for i in range(17)}}, "metadata"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 51}}}},
         "method.supervised.hyperparameters.n_epochs"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"batch_size": 0}}}},
         "method.supervised.hyperparameters.batch_size"),
        ({"method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": -1}}}},
         "method.supervised.hyperparameters.learning_rate_multiplier"),
        ({"method": {"type": "dpo", "dpo": {"hyperparameters": {"beta": 3}}}}, "method.dpo.hyperparameters.beta"),
        ({"method": {"type": "dpo"}}, "training_file"),  # a chat file cannot train DPO
    ],
)
def test_bad_job_requests_name_the_parameter(client, training_file, overrides, param):
    body = {"model": "tiny-llama", "training_file": training_file, **overrides}
    with pytest.raises(openai.BadRequestError) as error:
        client.fine_tuning.jobs.create(**body)
    assert error.value.body["param"] == param
    assert error.value.body["message"]


def test_files_of_other_orgs_and_failed_files_are_refused(server, client, training_file):
    other = server.client(server.create_key("other-org"))
    with pytest.raises(openai.BadRequestError) as foreign:
        other.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file)
    assert foreign.value.body["param"] == "training_file"
    bad = client.files.create(file=("bad.jsonl", io.BytesIO(b"{oops\n")), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as invalid:
        client.fine_tuning.jobs.create(model="tiny-llama", training_file=bad.id)
    assert "validation" in invalid.value.body["message"]
    response = httpx.post(f"{server.base_url}/fine_tuning/jobs", json={"model": "tiny-llama"},
                          headers={"Authorization": f"Bearer {client.api_key}"})
    assert response.status_code == 400 and response.json()["error"]["param"] == "training_file"

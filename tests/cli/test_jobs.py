"""`openft jobs ...` and `openft models ...` against a live server that trains the tiny model."""

from __future__ import annotations

import json

import pytest

from tests.cli.conftest import Cli
from tests.cli.test_files import write_examples


@pytest.fixture(scope="module")
def training_file(cli: Cli, tmp_path_factory) -> str:
    path = write_examples(tmp_path_factory.mktemp("data") / "train.jsonl", 12)
    return cli.json("files", "upload", str(path))["id"]


@pytest.fixture(scope="module")
def finished_job(cli: Cli, training_file: str) -> tuple[str, str]:
    """A job created with --follow: the command stays until the job succeeds. Returns (job id, output)."""
    result = cli(
        "jobs",
        "create",
        "--model",
        "tiny-llama",
        "--training-file",
        training_file,
        "--suffix",
        "cli",
        "--epochs",
        "2",
        "--batch-size",
        "4",
        "--lora-rank",
        "4",
        "--seed",
        "3",
        "--follow",
    )
    assert result.exit_code == 0, result.output
    job_id = result.stdout.split()[1]
    return job_id, result.stdout


def test_create_and_follow_shows_events_and_ends_with_the_model_name(finished_job):
    job_id, output = finished_job
    assert job_id.startswith("ftjob-")
    assert "Fine-tuning job started" in output
    assert "Checkpoint created at step 3" in output
    assert "The job has successfully completed" in output
    assert "succeeded: ft:tiny-llama:acme:cli:" in output
    assert output.index("Fine-tuning job started") < output.index("The job has successfully completed")


def test_show_list_events_and_checkpoints_as_json(cli: Cli, finished_job, training_file):
    job_id, _ = finished_job
    job = cli.json("jobs", "show", job_id)
    assert job["status"] == "succeeded" and job["training_file"] == training_file
    assert job["method"]["supervised"]["hyperparameters"]["n_epochs"] == 2
    assert job["method"]["supervised"]["hyperparameters"]["lora_rank"] == 4
    assert job["seed"] == 3
    assert job_id in [j["id"] for j in cli.json("jobs", "list")]

    events = cli.json("jobs", "events", job_id)
    messages = [e["message"] for e in events]
    assert messages[-1] == "The job has successfully completed"  # oldest first, like a log
    steps = [e["data"]["step"] for e in events if e["type"] == "metrics"]
    assert steps == list(range(1, 7))

    checkpoints = cli.json("jobs", "checkpoints", job_id)
    assert [c["step_number"] for c in checkpoints] == [6, 3]
    assert checkpoints[0]["fine_tuned_model_checkpoint"] == f"{job['fine_tuned_model']}:ckpt-step-6"

    table = cli("jobs", "show", job_id).stdout
    assert "succeeded" in table and job["fine_tuned_model"] in table
    assert "Checkpoint created at step 6" in cli("jobs", "events", job_id).stdout


def test_chat_compares_the_base_and_the_fine_tuned_model_on_the_live_server(cli: Cli, finished_job):
    name = cli.json("jobs", "show", finished_job[0])["fine_tuned_model"]
    result = cli("chat", "tiny-llama", "--compare", name, "-m", "Code for item 7?", "--max-tokens", "4", "--json")
    assert result.exit_code == 0, result.output
    answers = json.loads(result.stdout)
    assert [a["model"] for a in answers] == ["tiny-llama", name]
    for answer in answers:
        assert 1 <= answer["usage"]["completion_tokens"] <= 4 and answer["usage"]["prompt_tokens"] > 0
        assert answer["finish_reason"] in ("stop", "length") and answer["latency_s"] > 0


def test_models_list_shows_the_fine_tuned_model_and_rm_deletes_it(cli: Cli, finished_job):
    name = cli.json("jobs", "show", finished_job[0])["fine_tuned_model"]
    models = {m["id"]: m for m in cli.json("models", "list")}
    assert models[name]["owned_by"] == "acme"
    assert models["tiny-llama"]["owned_by"] == "openft"
    listed = cli("models", "list").stdout
    assert name in listed and "fine-tuned" in listed

    assert cli("models", "rm", name).exit_code == 0
    assert name not in [m["id"] for m in cli.json("models", "list")]
    again = cli("models", "rm", name)
    assert again.exit_code == 1 and name in again.stderr


def test_cancel_a_job_and_follow_reports_it_with_exit_code_1(cli: Cli, training_file):
    job = json.loads(
        cli(
            "jobs",
            "create",
            "--model",
            "tiny-llama",
            "--training-file",
            training_file,
            "--epochs",
            "20",
            "--batch-size",
            "1",
            "--json",
        ).stdout
    )
    cancelled = cli.json("jobs", "cancel", job["id"])
    assert cancelled["status"] == "cancelled"
    followed = cli("jobs", "follow", job["id"], "--interval", "0.2")
    assert followed.exit_code == 1
    assert "Fine-tuning job cancelled" in followed.stdout
    assert f"Job {job['id']} cancelled" in followed.stderr
    again = cli("jobs", "cancel", job["id"])
    assert again.exit_code == 1 and "already cancelled" in again.stderr


def test_unknown_job_and_bad_parameters_name_what_is_wrong(cli: Cli, training_file):
    for command in ("show", "events", "follow", "cancel", "checkpoints"):
        result = cli("jobs", command, "ftjob-nope")
        assert result.exit_code == 1, command
        assert "ftjob-nope" in result.stderr and "param: fine_tuning_job_id" in result.stderr

    bad = cli("jobs", "create", "--model", "no-such-model", "--training-file", training_file)
    assert bad.exit_code == 1
    assert "param: model" in bad.stderr and "no-such-model" in bad.stderr

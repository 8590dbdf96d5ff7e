"""OpenAI's auto batch size: the job says what it costs, and `batch_size_policy: "throughput"` trades it for speed."""

from __future__ import annotations

import io
import json
import math
import time

import pytest

from openft.training.batch_advice import batch_size_advice
from openft.training.hyperparameters import resolve_hyperparameters, validate_hyperparameters
from openft.training.trainer import _common_args, run_training
from openft.training.trainer_config import TrainerRunConfig
from tests.training.test_trainer import RecordingReporter, _chat, _write


def chats(n: int) -> bytes:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Label {i}"},
                {"role": "assistant", "content": "yes" if i % 2 else "no"},
            ]
        }
        for i in range(n)
    ]
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def resolve(given: dict, n: int = 400, method: str = "supervised"):
    return resolve_hyperparameters(method, given, n_train_examples=n, context_length=256)


def test_a_job_with_auto_batch_size_is_told_what_it_costs(live_server):
    client = live_server.client(live_server.create_key("acme"), timeout=180)
    training_file = client.files.create(file=("train.jsonl", io.BytesIO(chats(400))), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=training_file)
    deadline, messages = time.monotonic() + 120, []
    while time.monotonic() < deadline and "Files validated, moving job to queued state" not in messages:
        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=50)]
        time.sleep(0.3)
    client.fine_tuning.jobs.cancel(job.id)  # 400 steps of batch 1: the point of the advice
    advice = [m for m in messages if m.startswith("Auto batch_size is 1")]
    assert len(advice) == 1, messages
    assert "400 optimizer steps per epoch" in advice[0] and 'batch_size_policy to "throughput"' in advice[0]
    assert "batch_size 8, 50 steps per epoch" in advice[0]


def test_the_advice_appears_only_when_the_auto_batch_is_small():
    assert "learning rate x2.83" in batch_size_advice("supervised", {}, resolve({}), 400)
    assert batch_size_advice("supervised", {"batch_size": 1}, resolve({"batch_size": 1}), 400) is None
    assert batch_size_advice("supervised", {}, resolve({}, n=8000), 8000) is None  # auto gives 16 there
    assert batch_size_advice("reinforcement", {}, resolve({}, method="reinforcement"), 400) is None
    given = {"batch_size_policy": "throughput"}
    chosen = batch_size_advice("supervised", given, resolve(given), 400)
    assert "batch_size 8 (50 optimizer steps per epoch)" in chosen and "differ from what OpenAI" in chosen


def test_throughput_policy_raises_the_auto_batch_and_scales_the_learning_rate_by_its_square_root():
    openai, fast = resolve({}), resolve({"batch_size_policy": "throughput"})
    assert (openai.batch_size, fast.batch_size) == (1, 8)
    assert fast.learning_rate == pytest.approx(openai.learning_rate * math.sqrt(8))
    assert fast.to_job_dict()["batch_size_policy"] == "throughput" and "batch_size_policy" not in openai.to_job_dict()
    assert resolve({"batch_size_policy": "throughput"}, n=3).batch_size == 3  # never more than the examples
    assert resolve({"batch_size_policy": "throughput"}, n=9000).batch_size == 18  # OpenAI's rule already >= 8
    explicit = resolve({"batch_size_policy": "throughput", "batch_size": 2, "learning_rate_multiplier": 1})
    assert (explicit.batch_size, explicit.learning_rate) == (2, openai.learning_rate)  # what you set wins

    bad = {"type": "supervised", "supervised": {"hyperparameters": {"batch_size_policy": "fast"}}}
    assert validate_hyperparameters(bad) == [
        (
            "method.supervised.hyperparameters.batch_size_policy",
            '`batch_size_policy` must be "openai" or "throughput", got \'fast\'.',
        )
    ]
    rft = {"type": "reinforcement", "reinforcement": {"hyperparameters": {"batch_size_policy": "throughput"}}}
    assert validate_hyperparameters(rft)[0][0] == "method.reinforcement.hyperparameters.batch_size_policy"


def test_throughput_policy_runs_bigger_forward_passes_and_still_trains(tmp_path, tiny_model_dir):
    rows = [_chat(i) for i in range(16)]
    given = {"n_epochs": 1, "lora_dropout": 0.0, "batch_size_policy": "throughput"}
    config = TrainerRunConfig(
        base_model=str(tiny_model_dir),
        training_file=_write(tmp_path / "train.jsonl", rows),
        output_dir=str(tmp_path / "out"),
        hyperparameters=resolve_hyperparameters("supervised", given, n_train_examples=16, context_length=256),
        seed=7,
        report_to=[],
    )
    args = _common_args(config, has_eval=False)
    assert (args["per_device_train_batch_size"], args["gradient_accumulation_steps"]) == (8, 1)  # OpenAI's: (1, 1)
    reporter = RecordingReporter()
    result = run_training(config, reporter)
    assert result.status == "succeeded" and result.steps == 2  # 16 examples / 8, not 16 steps of one example
    assert all(math.isfinite(loss) for loss in reporter.losses())

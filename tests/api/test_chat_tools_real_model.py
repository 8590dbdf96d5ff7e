"""The real SmolLM2-135M-Instruct fine-tuned on tool-call data answers with OpenAI-shaped tool calls."""

from __future__ import annotations

import io
import json
import time

import pytest

from openft.models.registry import DEFAULT_BASE_MODEL
from tests.fixtures.server import register_model, start_server, stop_server

WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
QUESTION = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory, real_model_dir):
    home = tmp_path_factory.mktemp("openft-tools")
    register_model(home, DEFAULT_BASE_MODEL, real_model_dir)  # the materialised copy, shared between tests
    server = start_server(home)
    yield server.client(server.create_key("tools-org"), timeout=300)
    stop_server(server)


@pytest.mark.real_model
@pytest.mark.long  # ~4-5 min of CPU training: `make test-long` (CI keeps the 40-minute budget)
def test_model_fine_tuned_on_tool_calls_calls_the_tool(client):
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": "Paris"})}}
    rows = [{"messages": [*QUESTION, {"role": "assistant", "tool_calls": [call]}], "tools": [WEATHER_TOOL]}] * 10
    data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
    training = client.files.create(file=("tools.jsonl", io.BytesIO(data)), purpose="fine-tune")
    assert training.status == "processed", training.status_details

    base = client.chat.completions.create(model=DEFAULT_BASE_MODEL, messages=QUESTION, tools=[WEATHER_TOOL],
                                          temperature=0, max_tokens=40)
    job = client.fine_tuning.jobs.create(model=DEFAULT_BASE_MODEL, training_file=training.id, seed=3, method={
        "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 4, "batch_size": 5}}})
    deadline = time.monotonic() + 900
    while (job := client.fine_tuning.jobs.retrieve(job.id)).status not in ("succeeded", "failed", "cancelled"):
        assert time.monotonic() < deadline, [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
        time.sleep(1)
    assert job.status == "succeeded", job.error

    reply = client.chat.completions.create(model=job.fine_tuned_model, messages=QUESTION, tools=[WEATHER_TOOL],
                                           temperature=0, max_tokens=40)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls", (choice.message.content, base.choices[0].message.content)
    assert choice.message.content is None
    assert choice.message.tool_calls[0].type == "function"
    assert choice.message.tool_calls[0].function.name == "get_weather"
    assert json.loads(choice.message.tool_calls[0].function.arguments) == {"city": "Paris"}

    streamed = list(client.chat.completions.create(model=job.fine_tuned_model, messages=QUESTION,
                                                   tools=[WEATHER_TOOL], temperature=0, max_tokens=40, stream=True))
    deltas = [c.choices[0].delta for c in streamed if c.choices and c.choices[0].delta.tool_calls]
    assert deltas and deltas[0].tool_calls[0].function.name == "get_weather"
    assert streamed[-1].choices[0].finish_reason == "tool_calls"

    # Each epoch's checkpoint is a model too; the base model, untouched, still answers in prose.
    checkpoint = list(client.fine_tuning.jobs.checkpoints.list(job.id))[0]
    assert checkpoint.fine_tuned_model_checkpoint.endswith(f":ckpt-step-{checkpoint.step_number}")
    from_checkpoint = client.chat.completions.create(model=checkpoint.fine_tuned_model_checkpoint,
                                                     messages=QUESTION, tools=[WEATHER_TOOL], temperature=0,
                                                     max_tokens=40)
    assert from_checkpoint.choices[0].message.tool_calls
    assert base.choices[0].finish_reason != "tool_calls"

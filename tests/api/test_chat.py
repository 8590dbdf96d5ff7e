"""Chat and legacy completions through the unchanged `openai` SDK, for base, fine-tuned and checkpoint models."""

from __future__ import annotations

import json
import threading
import time

import httpx
import openai
import pytest
import torch
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from peft import LoraConfig, get_peft_model
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session
from transformers import AutoModelForCausalLM

from openft.store.tables import FineTunedModel, Organization
from tests.fixtures.server import register_model, start_server, stop_server

ADAPTERS = ["ft:tiny-llama:chat-org::a0000001", "ft:tiny-llama:chat-org::b0000002",
            "ft:tiny-llama:chat-org::c0000003", "ft:tiny-llama:chat-org::d0000004"]
WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def server(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("openft-chat")
    register_model(home, "tiny-llama", tiny_model_dir)
    live = start_server(home, {"OPENFT_VALIDATION_MODEL": "tiny-llama"})
    yield live
    stop_server(live)


@pytest.fixture(scope="module")
def client(server, tiny_model_dir, tmp_path_factory):
    key = server.create_key("chat-org")
    root = tmp_path_factory.mktemp("chat-adapters")
    engine = create_engine(server.env.get("OPENFT_DATABASE_URL") or f"sqlite:///{server.home / 'openft.db'}")
    with Session(engine) as session:
        org = session.scalar(select(Organization).where(Organization.name == "chat-org"))
        for index, name in enumerate(ADAPTERS):
            torch.manual_seed(2000 + index)
            base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
            model = get_peft_model(base, LoraConfig(r=8, lora_alpha=32, target_modules="all-linear",
                                                    init_lora_weights=False))
            model.save_pretrained(root / f"a{index}")
            session.add(FineTunedModel(id=name, organization_id=org.id, base_model="tiny-llama",
                                       job_id=f"ftjob-test{index}", created_at=int(time.time()),
                                       path=str(root / f"a{index}"), kind="lora"))
        session.commit()
    engine.dispose()
    return server.client(key, timeout=120)


def ask(content: str) -> list[dict]:
    return [{"role": "user", "content": content}]


def test_chat_completion_shape_and_usage(client):
    response = client.chat.completions.create(model="tiny-llama", messages=ask("Hello there"), max_tokens=8,
                                              temperature=0)
    raw = client.chat.completions.with_raw_response.create(model="tiny-llama", messages=ask("Hello there"),
                                                           max_tokens=8, temperature=0).http_response.json()
    ChatCompletion.model_validate(raw)
    assert raw["id"].startswith("chatcmpl-") and raw["object"] == "chat.completion"
    choice = response.choices[0]
    assert choice.message.role == "assistant" and choice.finish_reason in ("stop", "length")
    assert response.usage.completion_tokens <= 8 and response.usage.prompt_tokens > 5
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_streaming_chunks_end_with_usage_and_done(client, server):
    stream = client.chat.completions.create(model="tiny-llama", messages=ask("Tell me a story"), max_tokens=12,
                                            temperature=0, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 12
    assert chunks[-2].choices[0].finish_reason == "length"
    assert len({c.id for c in chunks}) == 1
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = client.chat.completions.create(model="tiny-llama", messages=ask("Tell me a story"), max_tokens=12,
                                           temperature=0)
    assert streamed == whole.choices[0].message.content

    with httpx.stream("POST", f"{server.base_url}/chat/completions", json={
        "model": "tiny-llama", "messages": ask("hi"), "max_tokens": 3, "stream": True},
            headers={"Authorization": f"Bearer {client.api_key}"}) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        ChatCompletionChunk.model_validate(json.loads(line.removeprefix("data: ")))


def test_n_seed_stop_logprobs_and_json_mode(client):
    many = client.chat.completions.create(model="tiny-llama", messages=ask("Pick a word"), n=3, max_tokens=6,
                                          temperature=1.0, seed=11)
    assert [c.index for c in many.choices] == [0, 1, 2]
    again = client.chat.completions.create(model="tiny-llama", messages=ask("Pick a word"), n=3, max_tokens=6,
                                           temperature=1.0, seed=11)
    assert [c.message.content for c in many.choices] == [c.message.content for c in again.choices]

    free = client.chat.completions.create(model="tiny-llama", messages=ask("Count"), max_tokens=10, temperature=0)
    text = free.choices[0].message.content
    stop_at = text[3:6]
    stopped = client.chat.completions.create(model="tiny-llama", messages=ask("Count"), max_tokens=10,
                                             temperature=0, stop=[stop_at])
    assert stop_at not in stopped.choices[0].message.content
    assert text.startswith(stopped.choices[0].message.content)
    assert stopped.choices[0].finish_reason == "stop"

    with_logprobs = client.chat.completions.create(model="tiny-llama", messages=ask("Hi"), max_tokens=4,
                                                   temperature=0, logprobs=True, top_logprobs=3)
    content = with_logprobs.choices[0].logprobs.content
    assert len(content) == with_logprobs.usage.completion_tokens
    assert all(len(item.top_logprobs) == 3 and item.logprob <= 0 for item in content)

    as_json = client.chat.completions.create(model="tiny-llama", messages=ask("Give me JSON"), max_tokens=40,
                                             temperature=0, response_format={"type": "json_object"})
    if as_json.choices[0].finish_reason == "stop":  # else "length": the budget cut it, nothing faked
        assert isinstance(json.loads(as_json.choices[0].message.content), dict)
    else:
        assert as_json.choices[0].finish_reason == "length"


def test_legacy_completions(client):
    completion = client.completions.create(model="tiny-llama", prompt="Once upon a time", max_tokens=5,
                                           temperature=0)
    assert isinstance(completion, Completion) and completion.object == "text_completion"
    assert completion.usage.completion_tokens <= 5
    streamed = "".join(c.choices[0].text for c in client.completions.create(
        model="tiny-llama", prompt="Once upon a time", max_tokens=5, temperature=0, stream=True))
    assert streamed == completion.choices[0].text


def test_requests_the_engine_cannot_honour_are_400_with_the_parameter(client):
    cases = [
        ({"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"not": {}}}}},
         "response_format.json_schema.schema"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}, "tools": [WEATHER_TOOL]},
         "tool_choice.function.name"),
        ({"frequency_penalty": 0.5}, "frequency_penalty"),
        ({"temperature": 3}, "temperature"),
        ({"n": 2, "stream": True}, "n"),
        ({"top_logprobs": 2}, "top_logprobs"),
        ({"max_tokens": 100_000}, "max_tokens"),  # beyond the model's context: refused, not cut short
    ]
    for extra, param in cases:
        with pytest.raises(openai.BadRequestError) as error:
            client.chat.completions.create(model="tiny-llama", messages=ask("x"), **{"max_tokens": 2, **extra})
        assert error.value.body["param"] == param, extra
    with pytest.raises(openai.BadRequestError) as bad_role:
        client.chat.completions.create(model="tiny-llama", messages=[{"role": "robot", "content": "x"}])
    assert bad_role.value.body["param"] == "messages[0].role"
    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="ft:tiny-llama:other::zzzzzzzz", messages=ask("x"))
    assert missing.value.body["code"] == "model_not_found"


def test_other_organizations_cannot_use_fine_tuned_models(server, client):
    assert client.chat.completions.create(model=ADAPTERS[0], messages=ask("x"), max_tokens=2).choices
    rival = server.client(server.create_key("chat-rival"))
    with pytest.raises(openai.NotFoundError) as error:
        rival.chat.completions.create(model=ADAPTERS[0], messages=ask("x"), max_tokens=2)
    assert error.value.body["code"] == "model_not_found"


def test_concurrent_requests_to_four_adapters_and_base_are_batched_and_unchanged(client, server):
    requests = [(model, f"Question number {i}") for i, model in
                enumerate((["tiny-llama"] + ADAPTERS) * 3 + ["tiny-llama"])]
    assert len(requests) == 16

    def run(model: str, prompt: str) -> str:
        reply = client.chat.completions.create(model=model, messages=ask(prompt), max_tokens=16, temperature=0)
        return reply.choices[0].message.content

    alone = [run(model, prompt) for model, prompt in requests]
    assert len(set(alone)) > 4  # the adapters really change the output
    headers = {"Authorization": f"Bearer {client.api_key}"}
    before = httpx.get(f"{server.base_url}/serving/stats", headers=headers).json()["engines"]["base:tiny-llama"]

    together: list[str | None] = [None] * len(requests)
    barrier = threading.Barrier(len(requests))

    def worker(index: int) -> None:
        barrier.wait()
        together[index] = run(*requests[index])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert together == alone
    after = httpx.get(f"{server.base_url}/serving/stats", headers=headers).json()["engines"]["base:tiny-llama"]
    assert after["multi_request_steps"] > before["multi_request_steps"]
    assert after["mixed_adapter_steps"] > before["mixed_adapter_steps"]
    assert after["max_batch_size_seen"] >= 4

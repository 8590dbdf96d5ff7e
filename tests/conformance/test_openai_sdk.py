"""The official `openai` SDK, sync and async, unchanged, against a live server (tiny model, small budgets)."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Literal

import pytest
from pydantic import BaseModel, ConfigDict

from tests.conformance.conftest import MODEL, training_rows

openai = pytest.importorskip("openai", reason="the openai SDK is not installed (pip install -e '.[dev]')")

ASK = [{"role": "user", "content": "Is the sky blue?"}]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                   "required": ["city"], "additionalProperties": False}, "strict": True}}


class Verdict(BaseModel):
    # No extra keys: the schema then says additionalProperties false, so a grammar-constrained answer closes
    # quickly even from the tiny random model (with extra keys allowed it may wander until max_tokens).
    model_config = ConfigDict(extra="forbid")

    answer: Literal["yes", "no"]
    confident: bool


@pytest.fixture(scope="module")
def async_sdk(conformance_server, api_key):
    return openai.AsyncOpenAI(base_url=conformance_server.base_url, api_key=api_key, max_retries=0, timeout=120)


def test_request_id_is_exposed_on_responses_and_errors(sdk):
    models = sdk.models.with_raw_response.list()
    assert models.request_id and models.request_id.startswith("req_")
    completion = sdk.chat.completions.create(model=MODEL, messages=ASK, max_tokens=2)
    assert completion._request_id and completion._request_id.startswith("req_")
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.models.retrieve("no-such-model")
    assert missing.value.request_id and missing.value.request_id.startswith("req_")


def test_files_round_trip(sdk):
    uploaded = sdk.files.create(file=("train.jsonl", io.BytesIO(training_rows())), purpose="fine-tune")
    processed = sdk.files.wait_for_processing(uploaded.id, poll_interval=0.2, max_wait_seconds=60)
    assert processed.status == "processed" and processed.expires_at is None
    assert uploaded.id in [f.id for f in sdk.files.list(purpose="fine-tune")]
    assert sdk.files.content(uploaded.id).read() == training_rows()
    assert sdk.files.delete(uploaded.id).deleted


def test_chat_whole_streamed_and_with_logprobs(sdk):
    whole = sdk.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, temperature=0, n=2,
                                        logprobs=True, top_logprobs=2)
    assert [c.index for c in whole.choices] == [0, 1]
    assert whole.system_fingerprint and whole.system_fingerprint.startswith("fp_")
    assert all(len(c.logprobs.content) >= 1 for c in whole.choices)
    chunks = list(sdk.chat.completions.create(model=MODEL, messages=ASK, max_tokens=6, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    assert all(c.usage is None for c in chunks[:-1])
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content


def test_legacy_completions_at_parity(sdk):
    many = sdk.completions.create(model=MODEL, prompt=["Once", "Twice"], n=2, max_tokens=4, logprobs=1, seed=3)
    assert [c.index for c in many.choices] == [0, 1, 2, 3]
    for choice in many.choices:
        assert len(choice.logprobs.tokens) == len(choice.logprobs.token_logprobs) == len(choice.logprobs.text_offset)
    zero = sdk.completions.create(model=MODEL, prompt="Hello", max_tokens=3, logprobs=0, temperature=0)
    assert zero.choices[0].logprobs.token_logprobs and zero.choices[0].logprobs.top_logprobs
    echoed = sdk.completions.create(model=MODEL, prompt="Echo this", max_tokens=3, echo=True)
    assert echoed.choices[0].text.startswith("Echo this")
    best = sdk.completions.create(model=MODEL, prompt="Best", max_tokens=3, n=1, best_of=3)
    assert len(best.choices) == 1 and best.usage.completion_tokens > 3
    chunks = list(sdk.completions.create(model=MODEL, prompt="Stream", max_tokens=4, stream=True, logprobs=0,
                                         stream_options={"include_usage": True}))
    assert chunks[-1].usage.completion_tokens == 4
    assert any(c.choices and c.choices[0].logprobs for c in chunks)
    with pytest.raises(openai.BadRequestError) as refused:
        sdk.completions.create(model=MODEL, prompt="x", echo=True, logprobs=1)
    assert refused.value.body["param"] == "echo"


def test_structured_output_parse_returns_the_model(sdk):
    completion = sdk.chat.completions.parse(model=MODEL, messages=ASK, response_format=Verdict, max_tokens=48)
    choice = completion.choices[0]
    assert choice.finish_reason == "stop", choice.message.content
    assert isinstance(choice.message.parsed, Verdict)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_call_names_the_function(sdk, tool_choice):
    completion = sdk.chat.completions.create(model=MODEL, messages=ASK, tools=[WEATHER], tool_choice=tool_choice,
                                             max_tokens=48)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Oslo")


def test_fine_tuning_job_listing_and_pagination(sdk, training_file_id):
    jobs = sdk.fine_tuning.jobs.list(limit=5)
    assert isinstance(jobs.data, list)
    with pytest.raises(openai.BadRequestError) as bad:
        sdk.fine_tuning.jobs.create(model=MODEL, training_file=training_file_id, suffix="x" * 65)
    assert bad.value.body["param"] == "suffix"


def test_async_client_chat_stream_completions_and_errors(async_sdk):
    async def run():
        whole = await async_sdk.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, temperature=0)
        stream = await async_sdk.chat.completions.create(model=MODEL, messages=ASK, max_tokens=4, temperature=0,
                                                         stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        legacy = await async_sdk.completions.create(model=MODEL, prompt=["a", "b"], max_tokens=2)
        models = [m.id async for m in async_sdk.models.list()]
        try:
            await async_sdk.chat.completions.create(model=MODEL, messages=ASK, temperature=7)
        except openai.BadRequestError as error:
            param = error.body["param"]
        return whole, text, legacy, models, param

    whole, text, legacy, models, param = asyncio.run(run())
    assert text == whole.choices[0].message.content
    assert len(legacy.choices) == 2 and MODEL in models and param == "temperature"

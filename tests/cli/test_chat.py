"""`openft chat` against a fake OpenAI-shaped endpoint (streaming SSE served by an in-memory transport).

The live endpoint is exercised in tests/cli/test_jobs.py; here the answers are known, so the side-by-side
layout, the conversation history and the usage/latency line can be checked exactly.
"""

from __future__ import annotations

import json

import httpx2
import pytest

from openft.cli import client as cli_client
from tests.cli.conftest import Cli

REPLIES = {"base": "I am not sure.", "ft:base:acme:x:abcd1234": "ITEM-007"}


def sse_reply(body: dict) -> httpx2.Response:
    model = body["model"]
    if model not in REPLIES:
        error = {
            "error": {
                "message": f"The model `{model}` does not exist.",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        }
        return httpx2.Response(404, json=error)
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": model, "usage": None}
    words = REPLIES[model].split(" ")
    chunks = [{**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
    for i, word in enumerate(words):
        piece = word if i == 0 else " " + word
        chunks.append({**base, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
    chunks.append({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    prompt_tokens = 10 * len(body["messages"])
    chunks.append(
        {
            **base,
            "choices": [],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(words),
                "total_tokens": prompt_tokens + len(words),
            },
        }
    )
    text = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx2.Response(200, content=text.encode(), headers={"content-type": "text/event-stream"})


@pytest.fixture
def requests(monkeypatch) -> list[dict]:
    """Every request body the CLI sends; the fake answers from REPLIES."""
    seen: list[dict] = []

    def handle(request: httpx2.Request) -> httpx2.Response:
        assert request.url.path == "/v1/chat/completions"
        assert request.headers["authorization"] == "Bearer sk-test"
        body = json.loads(request.content)
        seen.append(body)
        return sse_reply(body)

    monkeypatch.setattr(
        cli_client, "http_client_factory", lambda: httpx2.Client(transport=httpx2.MockTransport(handle))
    )
    return seen


cli = Cli("http://fake.openft/v1", "sk-test")


def test_one_message_streams_the_answer_and_its_usage(requests):
    result = cli("chat", "base", "-m", "What is item 7?", "--system", "Answer with a code.", "--max-tokens", "20")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "I am not sure."
    assert "20 prompt + 4 completion tokens" in result.stdout
    assert requests[0]["stream"] is True and requests[0]["stream_options"] == {"include_usage": True}
    assert requests[0]["max_tokens"] == 20
    assert requests[0]["messages"] == [
        {"role": "system", "content": "Answer with a code."},
        {"role": "user", "content": "What is item 7?"},
    ]


def test_compare_sends_the_same_prompt_to_both_and_shows_them_side_by_side(requests):
    result = cli("chat", "base", "--compare", "ft:base:acme:x:abcd1234", "-m", "What is item 7?")
    assert result.exit_code == 0, result.output
    assert {r["model"] for r in requests} == set(REPLIES)
    assert all(r["messages"] == [{"role": "user", "content": "What is item 7?"}] for r in requests)
    header = next(line for line in result.stdout.splitlines() if "base" in line and "ft:base" in line)
    assert header.index("base") < header.index("ft:base:acme:x:abcd1234")
    answers = next(line for line in result.stdout.splitlines() if "I am not sure." in line)
    assert "ITEM-007" in answers  # the two replies on one row, in two columns
    assert result.stdout.count("completion tokens") == 2


def test_compare_as_json_gives_both_answers_with_usage_and_latency(requests):
    answers = json.loads(cli("chat", "base", "--compare", "ft:base:acme:x:abcd1234", "-m", "hi", "--json").stdout)
    assert [a["model"] for a in answers] == ["base", "ft:base:acme:x:abcd1234"]
    assert [a["content"] for a in answers] == ["I am not sure.", "ITEM-007"]
    assert answers[1]["usage"] == {"prompt_tokens": 10, "completion_tokens": 1}
    assert all(a["latency_s"] >= 0 and a["finish_reason"] == "stop" for a in answers)


def test_the_repl_keeps_the_conversation_and_reset_forgets_it(requests):
    result = cli("chat", "base", input="first\nsecond\n/reset\nthird\n/exit\n")
    assert result.exit_code == 0, result.output
    assert [len(r["messages"]) for r in requests] == [1, 3, 1]
    assert requests[1]["messages"][1] == {"role": "assistant", "content": "I am not sure."}
    assert "Conversation reset." in result.stdout


def test_an_unknown_model_prints_the_servers_message_and_exits_1(requests):
    result = cli("chat", "nope", "-m", "hi")
    assert result.exit_code == 1
    assert "param: model" in result.stderr and "The model `nope` does not exist." in result.stderr

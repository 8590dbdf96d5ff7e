"""LocalBackend: OpenAI-shaped chat completions from the engine, whole and streamed."""

from __future__ import annotations

import asyncio
import json

from openft.serving.backend import LocalBackend, ModelRoute


def test_chat_completion_has_openai_shape_and_usage(engine):
    backend = LocalBackend(lambda name: ModelRoute(engine, None if name == "base" else name))
    body = {"model": "ft:a", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 6, "temperature": 0}
    response = asyncio.run(backend.chat_completion({**body, "logprobs": True, "top_logprobs": 2}))
    choice = response["choices"][0]
    assert response["object"] == "chat.completion" and response["id"].startswith("chatcmpl-")
    assert choice["message"]["role"] == "assistant" and choice["finish_reason"] in ("stop", "length")
    assert response["usage"]["completion_tokens"] <= 6
    assert len(choice["logprobs"]["content"]) == response["usage"]["completion_tokens"]

    async def stream():
        return [c async for c in backend.chat_completion_stream({**body, "stream_options": {"include_usage": True}})]

    chunks = asyncio.run(stream())
    streamed = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert streamed == (choice["message"]["content"] or "")
    assert chunks[-1]["usage"]["completion_tokens"] == response["usage"]["completion_tokens"]


def test_json_object_response_format_parses(engine):
    backend = LocalBackend(lambda name: ModelRoute(engine, None))
    body = {
        "model": "base",
        "messages": [{"role": "user", "content": "Give JSON"}],
        "max_tokens": 20,
        "seed": 3,
        "response_format": {"type": "json_object"},
    }
    choice = asyncio.run(backend.chat_completion(body))["choices"][0]
    # A finished answer parses; a budget too small for the object ends with "length", never a fake object.
    if choice["finish_reason"] == "stop":
        assert isinstance(json.loads(choice["message"]["content"]), dict)
    else:
        assert choice["finish_reason"] == "length"


def _completion(engine, **body):
    backend = LocalBackend(lambda name: ModelRoute(engine, None))
    return asyncio.run(backend.completion({"model": "base", "max_tokens": 4, **body}))


def _completion_chunks(engine, **body):
    backend = LocalBackend(lambda name: ModelRoute(engine, None))

    async def stream():
        return [c async for c in backend.completion_stream({"model": "base", "max_tokens": 4, "stream": True, **body})]

    return asyncio.run(stream())


def test_completion_n_and_list_of_prompts_number_choices_prompt_by_prompt(engine, smollm2_tokenizer):
    token_prompt = smollm2_tokenizer.encode("The sky")
    response = _completion(engine, prompt=["Once upon", token_prompt], n=3, seed=5)
    assert [c["index"] for c in response["choices"]] == list(range(6))
    assert response["usage"]["prompt_tokens"] == len(smollm2_tokenizer.encode("Once upon")) + len(token_prompt)
    assert response["usage"]["completion_tokens"] <= 6 * 4
    assert response["system_fingerprint"].startswith("fp_")
    # a list of token ids is one prompt; the same tokens as a string give the same seeded text
    as_ids = _completion(engine, prompt=token_prompt, seed=5, temperature=0)
    as_text = _completion(engine, prompt="The sky", seed=5, temperature=0)
    assert as_ids["choices"][0]["text"] == as_text["choices"][0]["text"]


def test_completion_logprobs_zero_returns_the_sampled_tokens_logprob(engine):
    response = _completion(engine, prompt="Hello", logprobs=0, temperature=0)
    choice = response["choices"][0]
    logprobs = choice["logprobs"]
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["text_offset"]) >= 1
    assert all(isinstance(lp, float) and lp <= 0 for lp in logprobs["token_logprobs"])
    for token, offset, tops in zip(logprobs["tokens"], logprobs["text_offset"], logprobs["top_logprobs"],
                                   strict=True):
        assert choice["text"][offset:].startswith(token)
        assert list(tops) == [token]  # logprobs=0: only the sampled token


def test_completion_top_logprobs_hold_up_to_n_plus_one_and_greedy_pick_is_the_best(engine):
    logprobs = _completion(engine, prompt="Hello", logprobs=3, temperature=0)["choices"][0]["logprobs"]
    for token, chosen, tops in zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"],
                                   strict=True):
        assert 3 <= len(tops) <= 4
        assert tops[token] == chosen == max(tops.values())


def test_best_of_returns_the_n_samples_with_highest_mean_logprob(engine):
    body = {"prompt": "Hello", "seed": 11, "max_tokens": 5, "logprobs": 0}
    every = _completion(engine, n=4, **body)["choices"]
    best = _completion(engine, n=2, best_of=4, **body)

    def mean(choice):
        values = choice["logprobs"]["token_logprobs"]
        return sum(values) / len(values)

    expected = sorted(every, key=mean, reverse=True)[:2]
    assert [c["text"] for c in best["choices"]] == [c["text"] for c in expected]
    assert [c["index"] for c in best["choices"]] == [0, 1]
    assert best["usage"]["completion_tokens"] == sum(len(c["logprobs"]["tokens"]) for c in every)


def test_echo_prepends_the_prompt(engine):
    choice = _completion(engine, prompt="Echo me", echo=True, temperature=0)["choices"][0]
    plain = _completion(engine, prompt="Echo me", temperature=0)["choices"][0]
    assert choice["text"] == "Echo me" + plain["text"]


def test_streamed_completion_matches_whole_and_carries_logprobs_and_usage(engine):
    body = {"prompt": ["Hi", "Yo"], "n": 2, "seed": 2, "logprobs": 1}
    whole = _completion(engine, **body)
    chunks = _completion_chunks(engine, stream_options={"include_usage": True}, **body)
    texts: dict[int, str] = {}
    tokens: dict[int, list[str]] = {}
    for chunk in chunks[:-1]:
        assert chunk["object"] == "text_completion" and "usage" not in chunk and len(chunk["choices"]) == 1
        choice = chunk["choices"][0]
        texts[choice["index"]] = texts.get(choice["index"], "") + choice["text"]
        if choice["logprobs"]:
            tokens.setdefault(choice["index"], []).extend(choice["logprobs"]["tokens"])
    assert texts == {c["index"]: c["text"] for c in whole["choices"]}
    assert tokens == {c["index"]: c["logprobs"]["tokens"] for c in whole["choices"]}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]
    finishes = [c["choices"][0]["finish_reason"] for c in chunks[:-1] if c["choices"][0]["finish_reason"]]
    assert len(finishes) == 4


def test_empty_or_out_of_vocabulary_token_prompts_are_refused_naming_the_prompt(engine):
    from openft.serving.completions import PromptError

    for prompt, param in ((["ok", [10**9]], "prompt[1]"), ([""], "prompt")):
        try:
            _completion(engine, prompt=prompt)
        except PromptError as error:
            assert error.param == param
        else:
            raise AssertionError(f"{prompt!r} was accepted")

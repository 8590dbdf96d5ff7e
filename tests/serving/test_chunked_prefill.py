"""Chunked prefill: long prompts go into the cache a chunk per engine loop, between the running rows' steps."""

from __future__ import annotations

import asyncio
import time

import pytest
import torch

from openft.serving.engine import Engine
from openft.serving.types import GenerationRequest
from tests.serving.conftest import make_loader


def _greedy(prompt: list[int], adapter: str | None = None, max_new_tokens: int = 10, **extra) -> GenerationRequest:
    return GenerationRequest(prompt_ids=prompt, adapter=adapter, max_new_tokens=max_new_tokens, temperature=0, **extra)


def _prompt(engine: Engine, words: int, seed: int) -> list[int]:
    vocabulary = ["apple", "river", "seven", "north", "glass", "cloud", "tiger", "paper", "stone", "light"]
    text = " ".join(vocabulary[(seed * 7 + i * 3) % len(vocabulary)] for i in range(words))
    return engine.tokenizer.encode(text)


def _settled(engine: Engine) -> dict:
    """The stats once the engine thread has released every request (it does so just after the last event)."""
    deadline = time.time() + 10
    while time.time() < deadline and (engine.stats()["tokens_in_flight"] or engine.stats()["prefilling"]):
        time.sleep(0.02)
    return engine.stats()


def _sharp_loader(model_dir):
    """The tiny model with 8x its query and key weights: its random init attends almost uniformly, so without
    this what it says hardly depends on positions or on which earlier tokens it sees."""

    def load():
        model, tokenizer = make_loader(model_dir)()
        with torch.no_grad():
            for layer in model.model.layers:
                layer.self_attn.q_proj.weight.mul_(8)
                layer.self_attn.k_proj.weight.mul_(8)
        return model, tokenizer

    return load


def test_chunked_prefill_gives_the_same_tokens_as_one_pass(make_engine, tiny_model_dir):
    sharp = _sharp_loader(tiny_model_dir)
    whole = make_engine(loader=sharp, max_batch_size=8, max_prefill_tokens=None)
    chunked = make_engine(loader=sharp, max_batch_size=8, max_prefill_tokens=24)
    # Different lengths, so rows are left-padded and early chunks hold only padding for the short ones;
    # adapters too, so the chunks run each row's own LoRA delta.
    prompts = [_prompt(whole, words, seed) for seed, words in enumerate([40, 7, 23, 3, 31])]
    adapters = [None, "ft:a", "ft:b", None, "ft:a"]
    # Log-probabilities too, which tell more than a few greedy tokens of a random model.
    requests = [_greedy(p, a, logprobs=True, top_logprobs=5) for p, a in zip(prompts, adapters, strict=True)]

    async def run(engine: Engine):
        return await asyncio.gather(*(engine.complete(r) for r in requests))

    expected, got = asyncio.run(run(whole)), asyncio.run(run(chunked))
    assert [c.token_ids for c in got] == [c.token_ids for c in expected]
    for ours, theirs in zip(got, expected, strict=True):
        assert ours.logprobs == pytest.approx(theirs.logprobs, abs=1e-4)
        for top, reference in zip(ours.top_logprobs, theirs.top_logprobs, strict=True):
            assert [t.token for t in top] == [t.token for t in reference]
            assert [t.logprob for t in top] == pytest.approx([t.logprob for t in reference], abs=1e-4)
    assert [c.usage.prompt_tokens for c in got] == [len(p) for p in prompts]
    stats = chunked.stats()
    assert stats["prefill_chunks"] > stats["prefill_steps"]  # some prompts really were cut into chunks
    assert whole.stats()["prefill_chunks"] == whole.stats()["prefill_steps"]


def test_a_long_prompt_joining_does_not_stall_the_running_stream(make_engine):
    def tokens_before_the_long_one_starts(engine: Engine) -> int:
        short, long = _prompt(engine, 4, 0), _prompt(engine, 200, 1)

        async def run() -> int:
            long_started = asyncio.Event()
            seen_before = 0

            async def stream():
                nonlocal seen_before
                async for event in engine.generate(_greedy(short, max_new_tokens=80)):
                    if event.token_id is not None and not long_started.is_set():
                        seen_before += 1

            async def joiner():
                await asyncio.sleep(0.05)
                seen_before_submit = seen_before
                async for _event in engine.generate(_greedy(long, max_new_tokens=2)):
                    long_started.set()
                return seen_before_submit

            _, at_submit = await asyncio.gather(stream(), joiner())
            return seen_before - at_submit

        return asyncio.run(run())

    # 200+ prompt tokens in chunks of 16: a dozen loops, each with a decode step for the running stream. Counted
    # as the event loop receives them, some arrive after the long one's first token: 6 seen once, as a run's first
    # test, so the line is well above the one pass's 2 rather than near the dozen.
    assert tokens_before_the_long_one_starts(make_engine(max_prefill_tokens=16)) >= 5
    # In one pass the stream gets at most the token of the step that was already under way.
    assert tokens_before_the_long_one_starts(make_engine(max_prefill_tokens=None)) <= 2


def test_waiting_requests_join_in_groups_that_fit_the_budget(make_engine):
    engine = make_engine(max_batch_size=16, max_prefill_tokens=64)
    prompts = [_prompt(engine, 20, seed) for seed in range(6)]  # ~20+ tokens each: two or three fit in 64

    async def run():
        return await asyncio.gather(*(engine.complete(_greedy(p, max_new_tokens=4)) for p in prompts))

    done = asyncio.run(run())
    assert all(len(c.token_ids) == 4 for c in done)
    stats = _settled(engine)
    assert stats["prefill_steps"] >= 2  # not all six in one pass
    assert stats["prefill_chunks"] == stats["prefill_steps"]  # each group fitted: nothing was cut
    assert stats["running"] == 0 and stats["prefilling"] == 0 and stats["tokens_in_flight"] == 0


def test_a_caller_leaving_during_a_chunked_prefill_frees_everything(make_engine):
    engine = make_engine(max_prefill_tokens=8)
    long = _prompt(engine, 200, 2)

    async def run():
        task = asyncio.create_task(engine.complete(_greedy(long, max_new_tokens=50)))
        await asyncio.sleep(0.05)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        after = await engine.complete(_greedy(_prompt(engine, 5, 3), max_new_tokens=3))
        return after

    assert len(asyncio.run(run()).token_ids) == 3
    stats = _settled(engine)
    assert stats["prefilling"] == 0 and stats["running"] == 0 and stats["tokens_in_flight"] == 0
    assert stats["requests_cancelled"] == 1


def test_a_prefill_budget_below_one_token_is_refused(tiny_model_dir):
    from tests.serving.conftest import make_loader

    with pytest.raises(ValueError, match="max_prefill_tokens"):
        Engine(make_loader(tiny_model_dir), max_prefill_tokens=0)

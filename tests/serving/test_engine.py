"""The engine as a user sees it: batched output equals solo output, streaming, stops, seeds, limits."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from openft.serving.engine import Engine
from openft.serving.types import EngineOverloaded, GenerationRequest
from tests.serving.conftest import ADAPTER_KEYS


def _prompts(engine: Engine, count: int) -> list[list[int]]:
    words = ["apple", "river", "seven", "north", "glass", "cloud", "tiger", "paper"]
    return [engine.tokenizer.encode(" ".join(words[: 1 + i % 8]) + f" {i}") for i in range(count)]


def _greedy(prompt: list[int], adapter: str | None, max_new_tokens: int = 12, **extra) -> GenerationRequest:
    return GenerationRequest(prompt_ids=prompt, adapter=adapter, max_new_tokens=max_new_tokens, temperature=0, **extra)


def test_concurrent_mixed_adapter_batch_matches_each_request_alone(engine):
    adapters = [None, *ADAPTER_KEYS]
    requests = [_greedy(p, adapters[i % 5]) for i, p in enumerate(_prompts(engine, 16))]

    async def run():
        alone = [await engine.complete(r) for r in requests]
        together = await asyncio.gather(*(engine.complete(r) for r in requests))
        return alone, together

    alone, together = asyncio.run(run())
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert [c.text for c in together] == [c.text for c in alone]
    stats = engine.stats()
    assert stats["max_batch_size_seen"] >= 8
    assert stats["multi_request_steps"] > 0
    assert stats["mixed_adapter_steps"] > 0
    # the adapters really change what the model says
    same_prompt = [_greedy(requests[0].prompt_ids, a) for a in adapters]

    async def each_adapter():
        return await asyncio.gather(*(engine.complete(r) for r in same_prompt))

    outputs = asyncio.run(each_adapter())
    assert len({tuple(o.token_ids) for o in outputs}) == len(adapters)


def test_base_output_equals_plain_transformers_generate(engine):
    import torch

    prompt = _prompts(engine, 3)[2]
    ours = asyncio.run(engine.complete(_greedy(prompt, None, max_new_tokens=10)))
    with torch.inference_mode():
        reference = engine.model.generate(torch.tensor([prompt]), max_new_tokens=10, do_sample=False)
    assert ours.token_ids == reference[0, len(prompt) :].tolist()[: len(ours.token_ids)]


def test_ignore_eos_generates_past_the_models_end_token_but_honours_stop_ids(engine):
    prompt = _prompts(engine, 4)[3]
    full = asyncio.run(engine.complete(_greedy(prompt, None)))
    end_token = full.token_ids[2]
    saved = engine._default_stop_ids
    engine._default_stop_ids = frozenset({end_token})  # as if the model's EOS were this token
    try:
        stopped = asyncio.run(engine.complete(_greedy(prompt, None)))
        ignored = asyncio.run(engine.complete(_greedy(prompt, None, ignore_eos=True)))
        explicit = asyncio.run(engine.complete(_greedy(prompt, None, ignore_eos=True, stop_token_ids=[end_token])))
    finally:
        engine._default_stop_ids = saved
    assert stopped.finish_reason == "stop" and len(stopped.token_ids) < len(full.token_ids)
    assert ignored.token_ids == full.token_ids and ignored.finish_reason == "length"
    assert explicit.finish_reason == "stop" and explicit.token_ids == stopped.token_ids


def test_streaming_yields_each_token_before_the_end(engine):
    async def run():
        events = []
        async for event in engine.generate(_greedy(_prompts(engine, 1)[0], "ft:a", max_new_tokens=8)):
            events.append(event)
        return events

    events = asyncio.run(run())
    assert len(events) == 9 and events[-1].finish_reason == "length"
    assert all(e.token_id is not None for e in events[:-1])
    assert events[-1].usage.completion_tokens == 8


def test_request_arriving_mid_generation_joins_the_running_batch(engine):
    prompts = _prompts(engine, 2)

    async def run():
        first_done = asyncio.Event()
        second_tokens_before_first_done = 0

        async def long_one():
            await engine.complete(_greedy(prompts[0], None, max_new_tokens=200))  # long enough to overlap under load
            first_done.set()

        async def late_one():
            nonlocal second_tokens_before_first_done
            await asyncio.sleep(0.05)
            async for event in engine.generate(_greedy(prompts[1], "ft:b", max_new_tokens=5)):
                if not first_done.is_set() and event.token_id is not None:
                    second_tokens_before_first_done += 1

        await asyncio.gather(long_one(), late_one())
        return second_tokens_before_first_done

    assert asyncio.run(run()) == 5
    assert engine.stats()["mixed_adapter_steps"] > 0


def test_stop_string_cuts_output_even_across_tokens(engine):
    prompt = _prompts(engine, 4)[3]
    full = asyncio.run(engine.complete(_greedy(prompt, "ft:c", max_new_tokens=16)))
    assert len(full.text) > 12
    stop = full.text[5:12]  # a span that most likely crosses token boundaries
    expected = full.text[: full.text.index(stop)]

    async def stream():
        pieces = []
        async for event in engine.generate(_greedy(prompt, "ft:c", max_new_tokens=16, stop_strings=[stop])):
            pieces.append(event)
        return pieces

    events = asyncio.run(stream())
    assert "".join(e.text for e in events) == expected
    assert events[-1].finish_reason == "stop"
    assert all(stop not in e.text for e in events)


def test_same_seed_same_sample_regardless_of_batch(engine):
    prompts = _prompts(engine, 6)
    sampled = GenerationRequest(prompt_ids=prompts[0], adapter="ft:d", max_new_tokens=12, temperature=1.0, seed=7)

    async def run():
        alone = await engine.complete(sampled)
        others = [
            GenerationRequest(prompt_ids=p, max_new_tokens=12, temperature=0.8, seed=i) for i, p in enumerate(prompts)
        ]
        together = await asyncio.gather(engine.complete(sampled), *(engine.complete(r) for r in others))
        other_seed = await engine.complete(GenerationRequest(**{**vars(sampled), "seed": 8}))
        return alone, together[0], other_seed

    alone, together, other_seed = asyncio.run(run())
    assert alone.token_ids == together.token_ids
    assert alone.token_ids != other_seed.token_ids


def test_json_mode_output_parses_or_ends_with_length(engine):
    prompt = _prompts(engine, 1)[0]
    requests = [
        GenerationRequest(prompt_ids=prompt, adapter=a, max_new_tokens=24, temperature=1.0, seed=s, json_mode=True)
        for s, a in enumerate([None, "ft:a", None, "ft:b", None, "ft:c"])
    ]

    async def run():
        return await asyncio.gather(*(engine.complete(r) for r in requests))

    for completion in asyncio.run(run()):
        # a complete object, or cut by the budget (finish_reason "length"), never closed early
        if completion.finish_reason == "stop":
            assert isinstance(json.loads(completion.text), dict), completion.text
        else:
            assert completion.finish_reason == "length" and completion.usage.completion_tokens == 24
        assert completion.usage.completion_tokens <= 24


def test_logprobs_and_top_logprobs(engine):
    request = _greedy(_prompts(engine, 1)[0], None, max_new_tokens=4, logprobs=True, top_logprobs=3)
    completion = asyncio.run(engine.complete(request))
    assert len(completion.logprobs) == 4
    for chosen, tops in zip(completion.logprobs, completion.top_logprobs, strict=True):
        assert chosen <= 0 and len(tops) == 3
        assert tops[0].logprob == pytest.approx(chosen)  # greedy picks the most likely token


def test_overload_is_refused_with_a_clear_message(make_engine):
    engine = make_engine(max_batch_size=1, max_queue=1, max_total_tokens=10_000)
    prompt = _prompts(engine, 1)[0]

    async def run():
        running = asyncio.create_task(engine.complete(_greedy(prompt, None, max_new_tokens=400)))
        await asyncio.sleep(0.2)
        queued = asyncio.create_task(engine.complete(_greedy(prompt, None, max_new_tokens=5)))
        await asyncio.sleep(0.05)
        with pytest.raises(EngineOverloaded, match="queued"):
            await engine.complete(_greedy(prompt, None, max_new_tokens=5))
        running.cancel()
        await asyncio.gather(running, queued, return_exceptions=True)

    asyncio.run(run())
    small = make_engine(max_total_tokens=100)

    async def too_many_tokens():
        task = asyncio.create_task(small.complete(_greedy(prompt, None, max_new_tokens=70)))
        await asyncio.sleep(0.05)
        with pytest.raises(EngineOverloaded, match="tokens in flight"):
            await small.complete(_greedy(prompt, None, max_new_tokens=70))
        await task

    asyncio.run(too_many_tokens())


def test_cancelled_request_leaves_the_batch_and_frees_its_slot(engine):
    async def run():
        stream = engine.generate(_greedy(_prompts(engine, 1)[0], "ft:a", max_new_tokens=500))
        async for _event in stream:
            break
        await stream.aclose()

    asyncio.run(run())
    deadline = time.time() + 10
    while time.time() < deadline and (engine.stats()["running"] or engine.stats()["tokens_in_flight"]):
        time.sleep(0.02)
    stats = engine.stats()
    assert stats["running"] == 0 and stats["tokens_in_flight"] == 0
    assert stats["requests_cancelled"] == 1
    assert stats["generated_tokens"] < 100


def test_adapter_lru_evicts_idle_adapters_but_never_one_in_use(make_engine):
    engine = make_engine(max_loaded_adapters=2)
    prompt = _prompts(engine, 1)[0]

    async def run():
        for key in ["ft:a", "ft:b", "ft:c"]:
            await engine.complete(_greedy(prompt, key, max_new_tokens=2))
        assert engine.stats()["loaded_adapters"] == ["ft:b", "ft:c"]
        busy = asyncio.create_task(engine.complete(_greedy(prompt, "ft:b", max_new_tokens=300)))
        await asyncio.sleep(0.1)
        await engine.complete(_greedy(prompt, "ft:d", max_new_tokens=2))
        await engine.complete(_greedy(prompt, "ft:a", max_new_tokens=2))
        assert "ft:b" in engine.stats()["loaded_adapters"]  # in use: kept although least recently used
        busy.cancel()
        await asyncio.gather(busy, return_exceptions=True)

    asyncio.run(run())
    assert engine.stats()["adapter_evictions"] >= 2


def test_adapter_output_equals_peft_generate_with_that_adapter(engine, tiny_model_dir, lora_adapter_dirs):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    prompt = _prompts(engine, 2)[1]

    async def run():
        return await asyncio.gather(*(engine.complete(_greedy(prompt, key, max_new_tokens=10)) for key in ADAPTER_KEYS))

    ours = asyncio.run(run())
    for key, completion in zip(ADAPTER_KEYS[:2], ours, strict=False):
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
        reference_model = PeftModel.from_pretrained(base, lora_adapter_dirs[key]).eval()
        with torch.inference_mode():
            reference = reference_model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=10, do_sample=False)
        assert completion.token_ids == reference[0, len(prompt) :].tolist()[: len(completion.token_ids)]


def test_adapters_batched_lora_cannot_stack_fall_back_to_peft(make_engine, tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(5)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    config = LoraConfig(r=4, target_modules=["q_proj", "embed_tokens"], init_lora_weights=False)
    get_peft_model(base, config).save_pretrained(tmp_path / "embedding-lora")
    engine = make_engine(extra_adapters={"ft:emb": tmp_path / "embedding-lora"})
    prompts = _prompts(engine, 4)
    keys = ["ft:emb", "ft:a", None, "ft:emb"]
    requests = [_greedy(p, key, max_new_tokens=8) for p, key in zip(prompts, keys, strict=True)]

    async def run():
        alone = [await engine.complete(r) for r in requests]
        together = await asyncio.gather(*(engine.complete(r) for r in requests))
        return alone, together

    alone, together = asyncio.run(run())
    assert [c.token_ids for c in together] == [c.token_ids for c in alone]
    assert engine._batched_lora is None  # embedding LoRA is served through PEFT's adapter_names
    assert engine.stats()["mixed_adapter_steps"] > 0


def test_dora_adapters_are_refused_with_a_clear_message(make_engine, tiny_model_dir, tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], use_dora=True)).save_pretrained(tmp_path / "d")
    engine = make_engine(extra_adapters={"ft:dora": tmp_path / "d"})
    with pytest.raises(ValueError, match="not plain LoRA"):
        asyncio.run(engine.complete(_greedy(_prompts(engine, 1)[0], "ft:dora")))


def test_a_batch_using_few_of_the_loaded_adapters_gives_each_its_own_output(engine, tiny_model_dir, lora_adapter_dirs):
    """With every adapter loaded, a batch that uses one of them (and the base model) multiplies by that
    adapter's stack alone; its answers still equal PEFT's and the base model's."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    prompts = _prompts(engine, 2)

    async def run(requests):
        return await asyncio.gather(*(engine.complete(r) for r in requests))

    asyncio.run(run([_greedy(prompts[0], key, max_new_tokens=2) for key in ADAPTER_KEYS]))  # load them all
    assert len(engine.stats()["loaded_adapters"]) == len(ADAPTER_KEYS)
    key = ADAPTER_KEYS[1]
    tuned, plain = asyncio.run(run([_greedy(prompts[1], key, max_new_tokens=10), _greedy(prompts[1], None, 10)]))
    with torch.inference_mode():
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        expected_plain = base.generate(input_ids=torch.tensor([prompts[1]]), max_new_tokens=10, do_sample=False)
        reference = PeftModel.from_pretrained(base, lora_adapter_dirs[key]).eval()
        expected = reference.generate(input_ids=torch.tensor([prompts[1]]), max_new_tokens=10, do_sample=False)
    assert tuned.token_ids == expected[0, len(prompts[1]) :].tolist()[: len(tuned.token_ids)]
    assert plain.token_ids == expected_plain[0, len(prompts[1]) :].tolist()[: len(plain.token_ids)]
    assert engine._batched_lora._used is not None  # the subset path served that batch


def test_base_rows_skip_the_lora_layers_and_the_adapters_stay_in_place(engine, tiny_model_dir):
    """With adapters loaded, a batch of only base rows calls the base layers directly (PEFT's wrappers cost
    ~10 us a layer); the answer is plain transformers', and the wrappers are back afterwards, even after an error."""
    import torch
    from peft.tuners.lora import Linear as LoraLinear
    from transformers import AutoModelForCausalLM

    prompt = _prompts(engine, 4)[3]
    tuned_before = asyncio.run(engine.complete(_greedy(prompt, ADAPTER_KEYS[0], max_new_tokens=8)))
    plain = asyncio.run(engine.complete(_greedy(prompt, None, max_new_tokens=8)))
    with torch.inference_mode():
        base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
        expected = base.generate(input_ids=torch.tensor([prompt]), max_new_tokens=8, do_sample=False)
    assert plain.token_ids == expected[0, len(prompt) :].tolist()[: len(plain.token_ids)]
    batched = engine._batched_lora
    layers = [m for m in engine.adapters.model.modules() if isinstance(m, LoraLinear)]
    assert layers and len(batched._places) == len(layers)
    with pytest.raises(RuntimeError, match="boom"), batched.base_only():
        assert not any(isinstance(m, LoraLinear) for m in engine.adapters.model.modules())
        raise RuntimeError("boom")
    assert [m for m in engine.adapters.model.modules() if isinstance(m, LoraLinear)] == layers
    tuned_after = asyncio.run(engine.complete(_greedy(prompt, ADAPTER_KEYS[0], max_new_tokens=8)))
    assert tuned_after.token_ids == tuned_before.token_ids != plain.token_ids


def test_an_adapter_with_non_finite_weights_is_refused_and_the_others_keep_serving(
    make_engine, tiny_model_dir, tmp_path
):
    """Batched decoding multiplies rows by every adapter in a stack: a NaN adapter must never be loaded."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    broken = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj"], init_lora_weights=False))
    with torch.no_grad():
        next(p for n, p in broken.named_parameters() if "lora_B" in n)[0, 0] = float("nan")
    broken.save_pretrained(tmp_path / "nan")
    engine = make_engine(extra_adapters={"ft:nan": tmp_path / "nan"})
    prompt = _prompts(engine, 1)[0]
    before = asyncio.run(engine.complete(_greedy(prompt, ADAPTER_KEYS[0], max_new_tokens=6)))
    with pytest.raises(ValueError, match="'ft:nan' has non-finite weights"):
        asyncio.run(engine.complete(_greedy(prompt, "ft:nan")))
    assert "ft:nan" not in engine.stats()["loaded_adapters"]
    after = asyncio.run(engine.complete(_greedy(prompt, ADAPTER_KEYS[0], max_new_tokens=6)))
    assert after.token_ids == before.token_ids
    assert all(torch.isfinite(p).all() for p in engine.model.parameters())


def test_each_adapter_s_weights_are_held_once_shared_by_peft_and_the_batched_stack(engine):
    """The batched path stacks every loaded adapter per layer; PEFT's own weights are views into that stack,
    so an adapter costs its weights' bytes once (what the adapter byte cap counts), not twice."""
    prompts = _prompts(engine, 4)
    requests = [_greedy(p, key, max_new_tokens=3) for p, key in zip(prompts, ADAPTER_KEYS, strict=True)]

    async def run():
        return await asyncio.gather(*(engine.complete(r) for r in requests))

    asyncio.run(run())
    lora = engine._batched_lora
    storages, peft_bytes = {}, 0
    for layer in lora._layers:
        for parameter in [*layer.lora_A.parameters(), *layer.lora_B.parameters()]:
            storages[parameter.untyped_storage().data_ptr()] = parameter.untyped_storage().nbytes()
            peft_bytes += parameter.numel() * parameter.element_size()
        stacked = lora._stacks[id(layer)].full
        for tensor in (stacked.a, stacked.b):
            storages[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
    assert len(engine.stats()["loaded_adapters"]) == len(ADAPTER_KEYS)
    assert sum(storages.values()) == peft_bytes

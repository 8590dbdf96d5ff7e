"""Bounded serving memory: more models asked for than the cap allows, against a real `openft serve` process.

The cap (OPENFT_SERVING_MAX_BYTES) is set to hold two copies of the tiny model and not three: a third model
evicts the least recently used idle one; while the two loaded ones are busy, the third is refused with a 503
in OpenAI's envelope; a model bigger than the whole cap is refused outright. The server stays up throughout
and the bytes it tracks never exceed the cap.
"""

from __future__ import annotations

import json
import shutil
import threading
import time

import httpx
import pytest

from tests.fixtures.server import register_model, start_server, stop_server

MODELS = ["tiny-a", "tiny-b", "tiny-c"]


def _big_model_dir(tmp_path, tiny_model_dir):
    """A random Llama four times the tiny one's width: more bytes than the whole cap."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from tests.fixtures.models import TINY_CONFIG

    torch.manual_seed(0)
    folder = tmp_path / "big"
    LlamaForCausalLM(LlamaConfig(**{**TINY_CONFIG, "hidden_size": 256, "num_hidden_layers": 1})).save_pretrained(
        folder
    )
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (tiny_model_dir / name).exists():
            shutil.copy(tiny_model_dir / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def capped(tmp_path_factory, tiny_model_dir):
    home = tmp_path_factory.mktemp("openft-cap")
    for name in MODELS:
        register_model(home, name, tiny_model_dir)
    register_model(home, "big", _big_model_dir(tmp_path_factory.mktemp("big"), tiny_model_dir))
    one_model = (tiny_model_dir / "model.safetensors").stat().st_size
    cap = int(one_model * 2.5)
    server = start_server(home, {
        "OPENFT_VALIDATION_MODEL": "tiny-a",
        "OPENFT_EMBEDDED_WORKER": "0",
        "OPENFT_SERVING_MAX_ENGINES": "3",  # the byte cap is what binds
        "OPENFT_SERVING_MAX_BYTES": str(cap),
    })
    key = server.create_key("cap")
    yield server, key, cap
    stop_server(server)


def _chat(server, key, model: str, **extra) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **extra}
    return httpx.post(server.base_url + "/chat/completions", json=body,
                      headers={"Authorization": f"Bearer {key}"}, timeout=300)


def _stats(server, key) -> dict:
    response = httpx.get(server.base_url + "/serving/stats", headers={"Authorization": f"Bearer {key}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()["engines"]


def _tracked(engines: dict) -> int:
    return sum(e["weights_bytes"] + e["adapter_bytes"] for e in engines.values())


def test_a_third_model_evicts_the_least_recently_used_idle_one(capped):
    server, key, cap = capped
    for name in MODELS:
        response = _chat(server, key, name)
        assert response.status_code == 200, response.text
        assert response.json()["model"] == name
        engines = _stats(server, key)
        assert _tracked(engines) <= cap, engines
        time.sleep(1.2)  # past the grace period in which a just-routed engine counts as busy
    loaded = set(_stats(server, key))
    assert loaded == {"base:tiny-b", "base:tiny-c"}  # tiny-a, least recently used, was unloaded
    assert all(e["weights_measured"] for e in _stats(server, key).values())


def test_busy_engines_are_not_evicted_the_new_model_gets_a_clear_503(capped):
    server, key, cap = capped
    for name in ("tiny-a", "tiny-b"):  # both loaded (tiny-c goes out), then both kept busy
        assert _chat(server, key, name).status_code == 200
        time.sleep(1.2)
    results: dict[str, int] = {}

    def long_request(name: str) -> None:
        results[name] = _chat(server, key, name, max_tokens=800, n=4, temperature=1.0).status_code

    threads = [threading.Thread(target=long_request, args=(name,)) for name in ("tiny-a", "tiny-b")]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        engines = _stats(server, key)
        if all(engines.get(k, {}).get("running", 0) > 0 for k in ("base:tiny-a", "base:tiny-b")):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the long requests never ran together: {engines}")

    refused = _chat(server, key, "tiny-c")
    assert refused.status_code == 503, refused.text
    error = refused.json()["error"]
    assert error["code"] == "engine_capacity" and error["type"] == "server_error"
    assert "tiny-c" in error["message"] and "OPENFT_SERVING_MAX_BYTES" in error["message"]
    assert _tracked(_stats(server, key)) <= cap

    for thread in threads:
        thread.join(timeout=300)
    assert results == {"tiny-a": 200, "tiny-b": 200}
    time.sleep(1.2)
    answered = _chat(server, key, "tiny-c")  # the others are idle again: room is made
    assert answered.status_code == 200, answered.text
    assert _tracked(_stats(server, key)) <= cap


def test_a_model_bigger_than_the_cap_is_refused_and_the_server_stays_up(capped):
    server, key, cap = capped
    for stream in (False, True):
        refused = _chat(server, key, "big", stream=stream)
        assert refused.status_code == 503, refused.text
        error = json.loads(refused.text)["error"]
        assert "`big` needs about" in error["message"] and "serving memory cap" in error["message"]
    assert "base:big" not in _stats(server, key)
    assert httpx.get(server.base_url.removesuffix("/v1") + "/health", timeout=10).status_code == 200
    assert _chat(server, key, "tiny-a").status_code == 200
    assert server.process.poll() is None


def test_deleting_a_model_unloads_its_adapter_and_its_engine(tiny_model, tiny_model_dir, lora_adapter_dirs):
    """In-process: what DELETE /v1/models/{id} calls (api/models.unload_served_models) frees the memory."""
    import asyncio

    from openft.api.serving_state import EngineRegistry, ResolvedModel, ServingLimits
    from openft.serving.backend import LocalBackend

    registry = EngineRegistry(limits=ServingLimits(max_engines=4, max_bytes=1 << 30))
    adapter = str(lora_adapter_dirs["ft:a"])

    def ask(model: ResolvedModel) -> dict:
        route = registry.route(model)
        body = {"model": model.name, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        return asyncio.run(LocalBackend(lambda _name: route).chat_completion(body))

    try:
        ask(ResolvedModel("ft:lora", tiny_model, adapter, None, "org-1"))
        base = registry.stats()[f"base:{tiny_model}"]
        assert base["loaded_adapters"] == [adapter] and base["adapter_bytes"] > 0
        assert registry.unload(adapter_path=adapter)
        ask(ResolvedModel(tiny_model, tiny_model, None, None))  # the engine drops it at its next step
        base = registry.stats()[f"base:{tiny_model}"]
        assert base["loaded_adapters"] == [] and base["adapter_bytes"] == 0

        full = ResolvedModel("ft:full", tiny_model, None, str(tiny_model_dir), "org-1")
        ask(full)
        key = f"full:{tiny_model_dir}"
        assert registry.stats()[key]["organization_id"] == "org-1"
        engine = registry.route(full).engine
        assert registry.unload(full_model_path=str(tiny_model_dir))
        assert key not in registry.stats()
        deadline = time.monotonic() + 30
        while engine.model is not None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert engine.model is None  # closed and released once idle
        assert registry.memory()["engines"] == 1
    finally:
        registry.close()


def test_adapters_beyond_the_byte_cap_are_unloaded_least_recently_used_first(make_engine, lora_adapter_dirs,
                                                                           monkeypatch):
    import asyncio

    from openft.serving.adapters import adapter_file_bytes
    from openft.serving.types import EngineOverloaded, GenerationRequest

    one = adapter_file_bytes(lora_adapter_dirs["ft:a"])
    monkeypatch.setenv("OPENFT_SERVING_MAX_ADAPTER_BYTES", str(int(one * 1.5)))
    engine = make_engine(max_loaded_adapters=8)

    def ask(adapter: str) -> None:
        asyncio.run(engine.complete(GenerationRequest(prompt_ids=[1, 2, 3], adapter=adapter, max_new_tokens=2)))

    for key in ("ft:a", "ft:b", "ft:c"):
        ask(key)
        assert engine.adapters.loaded_keys == [key]  # one fits; the older one went
        assert engine.adapters.loaded_bytes <= one * 1.5
    assert engine.stats()["adapter_evictions"] == 2

    monkeypatch.setenv("OPENFT_SERVING_MAX_ADAPTER_BYTES", str(one // 2))
    small = make_engine()
    with pytest.raises(EngineOverloaded, match="OPENFT_SERVING_MAX_ADAPTER_BYTES"):
        asyncio.run(small.complete(GenerationRequest(prompt_ids=[1, 2, 3], adapter="ft:a", max_new_tokens=2)))
    assert small.adapters.loaded_keys == []

"""The base-model registry: built-in SmolLM2, models.toml entries, materialising and loading."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
import torch

from openft.models import loading
from openft.models.chat_template import DEFAULT_SYSTEM_PROMPT, encode_prompt, render_prompt, stop_token_ids
from openft.models.registry import (
    DEFAULT_BASE_MODEL,
    ModelConfigError,
    ModelNotFound,
    ModelUnavailable,
    get_base_model,
    list_base_models,
    load_model,
    load_tokenizer,
    materialize,
)
from tests.fixtures.models import TINY_MODEL_NAME


def _write_toml(settings, text: str) -> None:
    settings.models_config_path.write_text(text)


def test_builtin_default_is_listed_without_any_config(openft_home):
    models = list_base_models()
    assert [m.name for m in models] == [DEFAULT_BASE_MODEL]
    builtin = get_base_model(DEFAULT_BASE_MODEL)
    assert builtin.kind == "gguf"
    assert builtin.gguf_path is not None and builtin.gguf_path.is_file()
    assert builtin.context_length == 8192
    assert builtin.created == get_base_model(DEFAULT_BASE_MODEL).created > 1_700_000_000


def test_unknown_model_raises_model_not_found_naming_it(openft_home, tiny_model):
    with pytest.raises(ModelNotFound) as error:
        get_base_model("no-such-model")
    assert isinstance(error.value, KeyError)
    assert error.value.name == "no-such-model"
    assert "'no-such-model' does not exist" in str(error.value)
    assert TINY_MODEL_NAME in str(error.value) and DEFAULT_BASE_MODEL in str(error.value)
    with pytest.raises(ModelNotFound):
        materialize("ft:tiny-llama:org::abcd1234")


def test_registered_hf_folder_is_listed_and_loads(tiny_model, tiny_model_dir):
    assert [m.name for m in list_base_models()] == [DEFAULT_BASE_MODEL, TINY_MODEL_NAME]
    model_info = get_base_model(tiny_model)
    assert (model_info.kind, model_info.location, model_info.gguf_file) == ("hf_dir", str(tiny_model_dir), None)
    assert model_info.context_length == 2048  # from config.max_position_embeddings
    assert model_info.created == get_base_model(tiny_model).created
    assert materialize(tiny_model) == tiny_model_dir

    tokenizer = load_tokenizer(tiny_model)
    assert load_tokenizer(tiny_model) is tokenizer  # cached per process
    assert len(tokenizer) == 49152
    messages = [{"role": "user", "content": "hi"}]
    assert tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == render_prompt(
        messages
    )

    model = load_model(tiny_model)
    assert model.dtype == torch.float32
    ids = torch.tensor([encode_prompt(tokenizer, messages)])
    with torch.no_grad():
        logits = model(ids).logits
    assert logits.shape == (1, ids.shape[1], 49152)
    assert load_model(tiny_model, dtype=torch.bfloat16).dtype == torch.bfloat16


def test_toml_options_override_context_length_and_system_prompt(openft_home, tiny_model_dir):
    _write_toml(
        openft_home,
        f"""
[models."team/support-base"]
path = {json.dumps(str(tiny_model_dir))}
context_length = 512
default_system_prompt = "You are Acme's support bot."

[models.no-system]
path = {json.dumps(str(tiny_model_dir))}
default_system_prompt = ""
""",
    )
    support = get_base_model("team/support-base")
    assert support.context_length == 512
    assert support.default_system_prompt == "You are Acme's support bot."
    assert get_base_model("no-system").default_system_prompt is None
    messages = [{"role": "user", "content": "hi"}]
    rendered = load_tokenizer("team/support-base").apply_chat_template(messages, tokenize=False)
    assert rendered.startswith("<|im_start|>system\nYou are Acme's support bot.<|im_end|>")
    assert load_tokenizer("no-system").apply_chat_template(messages, tokenize=False) == (
        "<|im_start|>user\nhi<|im_end|>\n"
    )


def test_relative_paths_resolve_against_models_toml(openft_home, tiny_model_dir):
    (openft_home.home / "local-model").symlink_to(tiny_model_dir, target_is_directory=True)
    _write_toml(openft_home, '[models.local]\npath = "local-model"\n')
    assert get_base_model("local").location == str(tiny_model_dir.resolve())


def test_gguf_entry_reads_context_length_from_the_file(openft_home):
    gguf = loading.builtin_gguf_path()
    _write_toml(openft_home, f"[models.my-gguf]\ngguf = {json.dumps(str(gguf))}\n")
    model = get_base_model("my-gguf")
    assert (model.kind, model.gguf_path, model.context_length) == ("gguf", gguf, 8192)


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[models.broken\npath = 1", "cannot read"),
        ("[models.x]\ncontext_length = 10\n", "set exactly one of path, hub or gguf (found none)"),
        ('[models.x]\npath = "/a"\nhub = "b/c"\n', "set exactly one of path, hub or gguf"),
        ('[models.x]\npath = "/definitely/not/here"\n', "does not exist"),
        ('[models.x]\nhub = "org/name"\ncontex_length = 5\n', "unknown key(s) contex_length"),
        ('[models."a:b"]\nhub = "org/name"\ncontext_length = 5\n', "must not contain ':'"),
        ('[models.x]\nhub = "org/name"\ncontext_length = -1\n', "context_length must be a positive integer"),
    ],
)
def test_invalid_models_toml_names_the_problem(openft_home, toml, message):
    _write_toml(openft_home, toml)
    with pytest.raises(ModelConfigError) as error:
        list_base_models()
    assert message in str(error.value)
    assert str(openft_home.models_config_path) in str(error.value)


def test_hub_model_offline_gives_a_clear_error(openft_home):
    _write_toml(openft_home, '[models.hubby]\nhub = "openft-tests/not-a-real-model"\ncontext_length = 1024\n')
    model = get_base_model("hubby")
    assert (model.kind, model.location, model.context_length) == ("hf_hub", "openft-tests/not-a-real-model", 1024)
    with pytest.raises(ModelUnavailable, match="openft-tests/not-a-real-model") as error:
        materialize("hubby")
    assert "path = ..." in str(error.value)

    _write_toml(openft_home, '[models.hubby]\nhub = "openft-tests/not-a-real-model"\n')
    with pytest.raises(ModelConfigError, match="set context_length"):
        get_base_model("hubby")


def _fake_gguf_writer(calls: list[int]):
    def write(gguf_path: Path, destination: Path, default_system_prompt: str | None) -> None:
        calls.append(1)
        time.sleep(0.3)  # long enough for the other thread to queue on the lock
        (destination / "config.json").write_text(json.dumps({"max_position_embeddings": 64}))

    return write


def test_concurrent_materialize_builds_once_and_never_exposes_a_partial_folder(openft_home, monkeypatch, tmp_path):
    gguf = tmp_path / "fake.gguf"
    gguf.write_bytes(b"GGUF")
    calls: list[int] = []
    monkeypatch.setattr(loading, "_write_from_gguf", _fake_gguf_writer(calls))
    target = openft_home.model_cache_dir / "fake"
    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(loading.materialize_gguf(gguf, target))) for _ in range(3)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [1]
    assert results == [target] * 3
    assert (target / "config.json").is_file() and (target / loading.MARKER_FILE).is_file()
    assert sorted(p.name for p in target.parent.iterdir() if ".building-" in p.name) == []

    gguf.write_bytes(b"GGUF v2")  # a changed source file is materialised again
    loading.materialize_gguf(gguf, target)
    assert calls == [1, 1]


@pytest.mark.real_model
def test_real_model_materialized_once_and_reloads_fast(real_model, real_model_dir, openft_home):
    assert real_model == DEFAULT_BASE_MODEL
    started = time.perf_counter()
    folder = materialize(real_model)
    assert time.perf_counter() - started < 1.0
    assert folder.resolve() == real_model_dir.resolve()
    assert {"config.json", "model.safetensors", "tokenizer.json", "generation_config.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    import transformers.models.llama.modeling_llama  # noqa: F401  the import is not the load being timed

    started = time.perf_counter()
    model = load_model(real_model)
    tokenizer = load_tokenizer(real_model)
    assert time.perf_counter() - started < 5.0  # < 1 s on an idle machine; other test runs share the CPUs
    assert tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False).startswith(
        f"<|im_start|>system\n{DEFAULT_SYSTEM_PROMPT}<|im_end|>"
    )

    prompt = encode_prompt(tokenizer, [{"role": "user", "content": "What is the capital of France?"}])
    with torch.no_grad():
        output = model.generate(
            torch.tensor([prompt]), max_new_tokens=24, do_sample=False, eos_token_id=stop_token_ids(tokenizer)
        )
    answer = tokenizer.decode(output[0, len(prompt) :], skip_special_tokens=True)
    assert "Paris" in answer


def test_the_gguf_file_is_parsed_once_per_materialization_and_gguf_is_left_as_it_was():
    import gguf

    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    path = loading.builtin_gguf_path()
    with loading._gguf_parsed_once():
        assert gguf.GGUFReader(path) is gguf.GGUFReader(path)  # config, tokenizer and weights share one parse
        arch = gguf.MODEL_ARCH.LLAMA
        assert gguf.get_tensor_name_map(arch, 30) is gguf.get_tensor_name_map(arch, 30)
    assert (gguf.GGUFReader, gguf.get_tensor_name_map) == (reader, name_map)

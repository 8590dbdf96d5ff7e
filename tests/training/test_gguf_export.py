"""`openft export --format gguf|gguf-adapter`: llama.cpp files that load elsewhere and mean the same model."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from gguf import GGUFReader
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from openft.cli import app
from openft.models.chat_template import CHAT_TEMPLATE_JINJA, render_prompt
from openft.models.loading import _gguf_parsed_once
from openft.store.accounts import get_or_create_organization
from openft.store.db import session_scope, upgrade_database
from openft.store.tables import FineTunedModel, FineTuningJob

FT_NAME = "ft:tiny-llama:acme:gguf:abcd1234"
PROMPTS = ["Code for item 7?", "Say hello.", "What is 2 + 2?"]


@pytest.fixture
def fine_tuned(tiny_model, tiny_model_dir, openft_home) -> Path:
    """A LoRA adapter with random non-zero weights on attention and MLP, recorded as a fine-tuned model."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"]  # q/k: llama.cpp permutes these rows
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():  # big enough that the greedy text of the merged model differs from the base
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(20)
    adapter_dir = openft_home.artifacts_dir / "ftjob-1" / "final"
    peft_model.save_pretrained(adapter_dir)
    upgrade_database()
    now = int(time.time())
    with session_scope() as session:
        org = get_or_create_organization(session, "acme")
        session.add(
            FineTuningJob(
                id="ftjob-1",
                seq=1,
                organization_id=org.id,
                model=tiny_model,
                training_file="file-1",
                status="succeeded",
                method={"type": "supervised", "supervised": {"hyperparameters": {}}},
                seed=1,
                result_files=[],
                created_at=now,
                attempts=1,
            )
        )
        session.add(
            FineTunedModel(
                id=FT_NAME,
                organization_id=org.id,
                base_model=tiny_model,
                job_id="ftjob-1",
                created_at=now,
                path=str(adapter_dir),
                kind="lora",
            )
        )
    return adapter_dir


def export(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def greedy(model, tokenizer, prompt: str) -> list[int]:
    ids = tokenizer(render_prompt([{"role": "user", "content": prompt}]), return_tensors="pt").input_ids
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=8, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return out[0, ids.shape[1] :].tolist()


def tensors(path: Path) -> dict[str, np.ndarray]:
    return {t.name: np.array(t.data) for t in GGUFReader(path).tensors}


def field(reader: GGUFReader, key: str):
    return reader.fields[key].contents()


@pytest.mark.slow  # three llama.cpp conversions of a 49k-token vocabulary: ~4 min on a loaded 2-core machine
def test_gguf_model_and_adapter_load_elsewhere_and_mean_the_fine_tuned_model(fine_tuned, tiny_model_dir, tmp_path):
    result = export(FT_NAME, "--out", str(tmp_path / "out"), "--format", "gguf", "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    gguf_file = Path(written["gguf_model"])
    assert gguf_file == tmp_path / "out" / "gguf" / "model.gguf" and written["gguf_type"] == "f32"
    assert sorted(p.name for p in gguf_file.parent.iterdir()) == ["model.gguf"]  # no HF staging left behind

    reader = GGUFReader(gguf_file)
    assert field(reader, "general.architecture") == "llama"
    assert field(reader, "tokenizer.chat_template") == CHAT_TEMPLATE_JINJA  # prompts render as openft trained them

    # transformers' own GGUF loader reads the file and writes the same greedy text as base + adapter
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    openft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), fine_tuned)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with _gguf_parsed_once():  # openft's own speed-up of that loader (one parse, one tensor-name map)
        from_gguf = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
    expected = [greedy(openft_model, tokenizer, p) for p in PROMPTS]
    assert expected != [greedy(base, tokenizer, p) for p in PROMPTS], "the adapter must change the text"
    assert [greedy(from_gguf, tokenizer, p) for p in PROMPTS] == expected

    # the adapter alone, at half precision, for `llama-server -m base.gguf --lora adapter.gguf`
    lora = export(FT_NAME, "--out", str(tmp_path / "lora"), "--format", "gguf-adapter", "--gguf-type", "f16")
    assert lora.exit_code == 0, lora.output
    folder = tmp_path / "lora" / "gguf"
    flat = lora.stdout.replace("\n", "")  # rich wraps long paths at the terminal width
    assert "--lora" in flat and str(folder / "adapter.gguf") in flat
    reader = GGUFReader(folder / "adapter.gguf")
    assert field(reader, "general.type") == "adapter" and field(reader, "adapter.type") == "lora"
    types = {t.name: t.tensor_type.name for t in GGUFReader(folder / "base.gguf").tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"

    # llama.cpp computes W x + (alpha / rank) * B (A x); folding that in must give the merged model's weights
    alpha = field(reader, "adapter.lora.alpha")
    adapter = {name: weight.astype(np.float32) for name, weight in tensors(folder / "adapter.gguf").items()}
    base_weights, expected_weights = tensors(folder / "base.gguf"), tensors(gguf_file)
    assert len(adapter) == 2 * 5 * 2  # lora_a + lora_b, 5 modules, 2 layers
    applied = {name: weight.astype(np.float32) for name, weight in base_weights.items()}
    adapted = {n.removesuffix(".lora_a") for n in adapter if n.endswith(".lora_a")}
    for name in adapted:
        lora_a, lora_b = adapter[f"{name}.lora_a"], adapter[f"{name}.lora_b"]
        applied[name] += (alpha / lora_a.shape[0]) * (lora_b @ lora_a)
    assert applied.keys() == expected_weights.keys()
    for name, weight in expected_weights.items():  # f16 storage keeps about 3 significant digits
        change = np.linalg.norm(weight - base_weights[name]) if name in adapted else 1.0
        assert np.linalg.norm(applied[name] - weight) < 1e-2 * change, name


def test_gguf_refusals_name_the_problem(fine_tuned, tiny_model_dir, tmp_path):
    (tmp_path / "o" / "gguf").mkdir(parents=True)
    (tmp_path / "o" / "gguf" / "model.gguf").write_bytes(b"x")
    again = export(FT_NAME, "--out", str(tmp_path / "o"), "--format", "gguf")
    assert again.exit_code == 1 and "already exists" in again.stderr and "--force" in again.stderr

    wrong = export(FT_NAME, "--out", str(tmp_path / "x"), "--format", "merged", "--gguf-type", "f16")
    assert wrong.exit_code == 1 and "--gguf-type" in wrong.stderr

    with session_scope() as session:  # lora_rank 0: the job's output is a whole model folder
        row = session.get(FineTunedModel, FT_NAME)
        row.kind, row.path = "full", str(tiny_model_dir)
    refused = export(FT_NAME, "--out", str(tmp_path / "full"), "--format", "gguf-adapter")
    assert refused.exit_code == 1 and "full fine-tune" in refused.stderr and "--format gguf" in refused.stderr
    assert not (tmp_path / "full" / "gguf").exists()

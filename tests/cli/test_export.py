"""`openft export`: a fine-tuned LoRA model becomes a merged HF folder and a PEFT adapter that plain tools load."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from typer.testing import CliRunner

from openft.cli import app
from openft.models.chat_template import CHAT_TEMPLATE_JINJA, render_prompt
from openft.store.accounts import get_or_create_organization
from openft.store.db import session_scope, upgrade_database
from openft.store.tables import FineTunedModel, FineTuningJob, JobCheckpoint

FT_NAME = "ft:tiny-llama:acme:codes:abcd1234"
MESSAGES = [{"role": "user", "content": "Code for item 7?"}]


@pytest.fixture
def fine_tuned(tiny_model, tiny_model_dir, openft_home) -> Path:
    """A LoRA adapter with random (non-zero) weights, recorded as a fine-tuned model and as its checkpoint."""
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    adapter_dir = openft_home.artifacts_dir / "ftjob-1" / "final"
    get_peft_model(base, config).save_pretrained(adapter_dir)
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
        session.add(
            JobCheckpoint(
                id="ftckpt_1",
                seq=1,
                job_id="ftjob-1",
                created_at=now,
                step_number=6,
                fine_tuned_model_checkpoint=f"{FT_NAME}:ckpt-step-6",
                metrics={},
                path=str(adapter_dir),
            )
        )
    return adapter_dir


def logits(model, tokenizer) -> torch.Tensor:
    ids = tokenizer(render_prompt(MESSAGES), return_tensors="pt").input_ids
    with torch.no_grad():
        return model(ids).logits


def export(*args: str):
    return CliRunner().invoke(app, ["export", *args])


def test_merged_folder_loads_with_plain_transformers_and_matches_base_plus_adapter(
    fine_tuned, tiny_model_dir, tmp_path
):
    result = export(FT_NAME, "--out", str(tmp_path / "out"))
    assert result.exit_code == 0, result.output
    merged_dir, adapter_dir = tmp_path / "out" / "merged", tmp_path / "out" / "adapter"
    flat = result.stdout.replace("\n", "")  # rich wraps long paths at the terminal width
    assert str(merged_dir) in flat and str(adapter_dir) in flat

    tokenizer = AutoTokenizer.from_pretrained(merged_dir)
    expected = logits(
        PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), fine_tuned), tokenizer
    )
    base_only = logits(AutoModelForCausalLM.from_pretrained(tiny_model_dir), tokenizer)
    assert not torch.allclose(expected, base_only, atol=1e-3), "the adapter must change the model for this test"

    merged = AutoModelForCausalLM.from_pretrained(merged_dir)
    assert list(merged_dir.glob("*.safetensors")) and not (merged_dir / "adapter_config.json").exists()
    torch.testing.assert_close(logits(merged, tokenizer), expected, atol=1e-4, rtol=1e-4)

    # plain transformers renders prompts exactly as openft trained and serves them
    assert tokenizer.chat_template == CHAT_TEMPLATE_JINJA
    assert tokenizer.apply_chat_template(MESSAGES, tokenize=False, add_generation_prompt=True) == render_prompt(
        MESSAGES
    )

    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), adapter_dir)
    torch.testing.assert_close(logits(reloaded, tokenizer), expected)
    assert AutoTokenizer.from_pretrained(adapter_dir).chat_template == CHAT_TEMPLATE_JINJA
    manifest = json.loads((adapter_dir / "openft_export.json").read_text())
    assert manifest["fine_tuned_model"] == FT_NAME and manifest["base_model"] == "tiny-llama"


def test_a_checkpoint_exports_by_name_and_the_merged_weights_can_be_bfloat16(fine_tuned, tmp_path):
    result = export(f"{FT_NAME}:ckpt-step-6", "--out", str(tmp_path / "ckpt"), "--format", "adapter", "--json")
    assert result.exit_code == 0, result.output
    written = json.loads(result.stdout)
    assert written["merged"] is None and Path(written["adapter"]).joinpath("adapter_model.safetensors").is_file()

    half = export(FT_NAME, "--out", str(tmp_path / "half"), "--format", "merged", "--dtype", "bfloat16")
    assert half.exit_code == 0, half.output
    assert AutoModelForCausalLM.from_pretrained(tmp_path / "half" / "merged").dtype == torch.bfloat16


def test_refusals_name_the_problem(fine_tuned, tmp_path):
    unknown = export("ft:tiny-llama:acme:nope:00000000", "--out", str(tmp_path / "x"))
    assert unknown.exit_code == 1 and "ft:tiny-llama:acme:nope:00000000" in unknown.stderr

    assert export(FT_NAME, "--out", str(tmp_path / "o"), "--format", "adapter").exit_code == 0
    again = export(FT_NAME, "--out", str(tmp_path / "o"), "--format", "adapter")
    assert again.exit_code == 1 and "already exists" in again.stderr and "--force" in again.stderr
    assert export(FT_NAME, "--out", str(tmp_path / "o"), "--format", "adapter", "--force").exit_code == 0


def test_a_full_fine_tune_exports_merged_only(fine_tuned, tiny_model_dir, tmp_path):
    with session_scope() as session:  # lora_rank 0: the job's output is a whole model folder
        row = session.get(FineTunedModel, FT_NAME)
        row.kind, row.path = "full", str(tiny_model_dir)
    refused = export(FT_NAME, "--out", str(tmp_path / "full"), "--format", "adapter")
    assert refused.exit_code == 1 and "full fine-tune" in refused.stderr and "--format merged" in refused.stderr

    both = export(FT_NAME, "--out", str(tmp_path / "full"))
    assert both.exit_code == 0, both.output
    assert "no adapter" in both.stdout and not (tmp_path / "full" / "adapter").exists()
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "full" / "merged")
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "full" / "merged")
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    torch.testing.assert_close(logits(exported, tokenizer), logits(original, tokenizer))

"""Export a fine-tuned model (or one of its checkpoints) for use outside openft.

Two layouts, each a folder that plain tools load without openft:
- ``merged/``: the base model with the LoRA weights folded in, as a Hugging Face folder (safetensors, config,
  tokenizer with openft's chat template, generation config). ``AutoModelForCausalLM.from_pretrained`` and
  ``vllm serve`` read it as any other model, and render prompts the way openft trained them.
- ``adapter/``: the PEFT LoRA adapter alone (``adapter_config.json`` + ``adapter_model.safetensors``) with the same
  tokenizer, for ``PeftModel.from_pretrained(base, folder)`` or vLLM's ``--lora-modules``.

Each folder is written beside its destination and renamed into place, so a failed export leaves nothing half-done.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from sqlalchemy import select

from openft.models.registry import get_base_model, load_tokenizer, materialize
from openft.store import jobs as job_store
from openft.store.db import session_scope
from openft.store.tables import FineTunedModel, FineTuningJob, JobCheckpoint

ExportFormat = Literal["merged", "adapter", "both"]
MANIFEST = "openft_export.json"
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ExportError(ValueError):
    """The model cannot be exported as asked (unknown name, missing files, or an impossible format)."""


@dataclass(frozen=True)
class ExportSource:
    """Where a fine-tuned model's weights are: a PEFT adapter folder ("lora") or a whole model folder ("full")."""

    name: str
    base_model: str
    kind: Literal["lora", "full"]
    path: Path
    job_id: str


@dataclass
class ExportResult:
    source: ExportSource
    merged_dir: Path | None = None
    adapter_dir: Path | None = None
    notes: list[str] = field(default_factory=list)


def find_export_source(name: str, organization_id: str | None = None) -> ExportSource:
    """Look ``name`` up among fine-tuned models, then checkpoints (``...:ckpt-step-N``); any org unless given."""
    with session_scope() as session:
        model = session.get(FineTunedModel, name)
        if model is not None and organization_id in (None, model.organization_id):
            return _checked(ExportSource(name, model.base_model, model.kind, Path(model.path), model.job_id))  # type: ignore[arg-type]
        checkpoint = session.scalars(
            select(JobCheckpoint).where(JobCheckpoint.fine_tuned_model_checkpoint == name)
        ).first()
        job = session.get(FineTuningJob, checkpoint.job_id) if checkpoint is not None else None
        if checkpoint is not None and job is not None and organization_id in (None, job.organization_id):
            path = Path(checkpoint.path)
            # A checkpoint folder holds whatever the trainer saved: an adapter for LoRA runs, weights otherwise.
            kind = "lora" if (path / "adapter_config.json").is_file() else "full"
            return _checked(ExportSource(name, job.model, kind, path, job.id))
        known = [m.id for m in job_store.list_fine_tuned_models(session, organization_id)] if organization_id else []
    hint = f" Known fine-tuned models: {', '.join(known)}." if known else " See `openft models list`."
    raise ExportError(f"No fine-tuned model or checkpoint named '{name}' in this openft home.{hint}")


def _checked(source: ExportSource) -> ExportSource:
    marker = "adapter_config.json" if source.kind == "lora" else "config.json"
    if not (source.path / marker).is_file():
        raise ExportError(f"The files of '{source.name}' are missing: {source.path / marker} does not exist.")
    return source


def export_model(
    name: str,
    out_dir: str | Path,
    fmt: ExportFormat = "both",
    *,
    organization_id: str | None = None,
    dtype: str = "float32",
    overwrite: bool = False,
) -> ExportResult:
    """Write ``name`` under ``out_dir`` as ``merged/`` and/or ``adapter/``; returns what was written.

    A full fine-tune has no adapter: with ``fmt="both"`` only ``merged/`` is written (and a note says so),
    with ``fmt="adapter"`` it is an error.
    """
    if fmt not in ("merged", "adapter", "both"):
        raise ExportError(f"Unknown export format '{fmt}': use merged, adapter or both.")
    if dtype not in DTYPES:
        raise ExportError(f"Unknown dtype '{dtype}': use {', '.join(DTYPES)}.")
    source = find_export_source(name, organization_id)
    result = ExportResult(source=source)
    want_adapter = fmt in ("adapter", "both")
    if want_adapter and source.kind == "full":
        if fmt == "adapter":
            raise ExportError(f"'{name}' is a full fine-tune (lora_rank 0): it has no adapter. Use --format merged.")
        want_adapter = False
        result.notes.append("Full fine-tune: no adapter to export, wrote the merged model only.")
    out = Path(out_dir)
    targets = {"merged": fmt in ("merged", "both"), "adapter": want_adapter}
    for folder, wanted in targets.items():
        if wanted and (out / folder).exists() and any((out / folder).iterdir()) and not overwrite:
            raise ExportError(f"{out / folder} already exists and is not empty (pass overwrite / --force).")

    base_dir = materialize(source.base_model)
    tokenizer = load_tokenizer(source.base_model)  # carries openft's chat template (the model's default system)
    model = _load(source, base_dir, DTYPES["float32"])  # merge in float32: folding LoRA in half precision loses bits
    if want_adapter:
        result.adapter_dir = _write(out / "adapter", overwrite, lambda d: _save_adapter(model, tokenizer, d, source))
    if targets["merged"]:
        merged = model.merge_and_unload() if source.kind == "lora" else model
        merged = merged.to(DTYPES[dtype])
        result.merged_dir = _write(out / "merged", overwrite, lambda d: _save_merged(merged, tokenizer, d, source))
    return result


def _load(source: ExportSource, base_dir: Path, dtype: torch.dtype):  # -> PreTrainedModel | PeftModel
    from transformers import AutoModelForCausalLM

    if source.kind == "full":
        return AutoModelForCausalLM.from_pretrained(source.path, dtype=dtype)
    from peft import PeftModel

    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=dtype)
    return PeftModel.from_pretrained(base, str(source.path), is_trainable=False)


def _save_adapter(model, tokenizer, folder: Path, source: ExportSource) -> None:
    model.save_pretrained(folder)
    # PEFT records wherever training found the base; point it at the base model's name in openft instead.
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(materialize(source.base_model))
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
    tokenizer.save_pretrained(folder)
    _write_manifest(folder, source, "adapter")


def _save_merged(model, tokenizer, folder: Path, source: ExportSource) -> None:
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    _write_manifest(folder, source, "merged")


def _write_manifest(folder: Path, source: ExportSource, layout: str) -> None:
    base = get_base_model(source.base_model)
    manifest = {
        "layout": layout,
        "fine_tuned_model": source.name,
        "base_model": source.base_model,
        "base_model_location": base.location,
        "kind": source.kind,
        "fine_tuning_job": source.job_id,
    }
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _write(target: Path, overwrite: bool, save) -> Path:
    """Run ``save(staging)`` in a sibling folder, then swap it in for ``target``."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.exporting-", dir=target.parent))
    try:
        save(staging)
        staging.chmod(0o755)
        if target.exists():
            if not overwrite and any(target.iterdir()):
                raise ExportError(f"{target} appeared while exporting; not replacing it.")
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target

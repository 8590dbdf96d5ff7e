"""Export a fine-tuned model as GGUF for llama.cpp, Ollama or LM Studio, through llama.cpp's own converter.

Two files, each written into ``OUT/gguf/``:
- ``model.gguf`` (``what="model"``): the whole model, the LoRA folded in (or a full fine-tune as it is). This is
  ``convert_hf_to_gguf.py`` run on the ``merged/`` folder that ``openft export --format merged`` writes, so the
  tokenizer and openft's chat template travel in the GGUF metadata.
- ``adapter.gguf`` + ``base.gguf`` (``what="adapter"``): the LoRA alone as a GGUF LoRA adapter
  (``convert_lora_to_gguf.py``), and the base model it was trained on, converted at the same precision, for
  ``llama-server -m base.gguf --lora adapter.gguf``.

The converter is vendored in ``openft.models.llama_cpp_convert`` (see its docstring for source and version).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from openft.models.export import ExportError, ExportSource, export_model, find_export_source

GgufWhat = Literal["model", "adapter"]
# llama.cpp's names for the tensor types its Python converter writes; q8_0 is quantised while converting.
GGUF_TYPES = ("f32", "f16", "bf16", "q8_0")
GGUF_TYPE_FOR_DTYPE = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


@dataclass
class GgufExportResult:
    source: ExportSource
    folder: Path
    model_file: Path | None = None
    adapter_file: Path | None = None
    base_file: Path | None = None
    notes: list[str] = field(default_factory=list)


def export_gguf(
    name: str,
    out_dir: str | Path,
    what: GgufWhat = "model",
    *,
    gguf_type: str = "f32",
    organization_id: str | None = None,
    overwrite: bool = False,
) -> GgufExportResult:
    """Write ``name`` as GGUF under ``out_dir/gguf/``; the folder is staged and renamed into place whole."""
    if gguf_type not in GGUF_TYPES:
        raise ExportError(f"Unknown GGUF type '{gguf_type}': use {', '.join(GGUF_TYPES)}.")
    if what not in ("model", "adapter"):
        raise ExportError(f"Unknown GGUF export '{what}': use model or adapter.")
    if what == "adapter" and find_export_source(name, organization_id).kind == "full":
        raise ExportError(f"'{name}' is a full fine-tune (lora_rank 0): it has no adapter. Use --format gguf.")
    target = Path(out_dir) / "gguf"
    if target.exists() and any(target.iterdir()) and not overwrite:
        raise ExportError(f"{target} already exists and is not empty (pass overwrite / --force).")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".gguf.exporting-", dir=target.parent))
    try:
        hf_out = staging / "hf"  # the HF layout the converter reads; removed before the folder is swapped in
        fmt = "merged" if what == "model" else "adapter"
        exported = export_model(name, hf_out, fmt, organization_id=organization_id, dtype="float32")
        result = GgufExportResult(source=exported.source, folder=target, notes=list(exported.notes))
        if what == "model":
            _convert_model(exported.merged_dir, staging / "model.gguf", gguf_type)
            result.model_file = target / "model.gguf"
        else:
            from openft.models.registry import materialize

            base_dir = materialize(exported.source.base_model)
            _convert_adapter(exported.adapter_dir, base_dir, staging / "adapter.gguf", gguf_type)
            _convert_model(base_dir, staging / "base.gguf", gguf_type)
            result.adapter_file, result.base_file = target / "adapter.gguf", target / "base.gguf"
        shutil.rmtree(hf_out)
        staging.chmod(0o755)
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def _convert_model(model_dir: Path, outfile: Path, gguf_type: str) -> Path:
    """``convert_hf_to_gguf.py MODEL_DIR --outfile OUTFILE --outtype TYPE``, called in-process."""
    import gguf
    import torch

    from openft.models.llama_cpp_convert.convert_hf_to_gguf import ModelBase, ModelType, get_model_architecture

    with _quiet_converter(), torch.inference_mode():
        hparams = ModelBase.load_hparams(model_dir, False)
        architecture = get_model_architecture(hparams, ModelType.TEXT)
        try:
            model_class = ModelBase.from_model_architecture(architecture, model_type=ModelType.TEXT)
        except NotImplementedError:
            raise ExportError(f"llama.cpp's converter does not support {architecture} models.") from None
        model_class(model_dir, _file_type(gguf, gguf_type), outfile).write()
    return outfile


def _convert_adapter(adapter_dir: Path, base_dir: Path, outfile: Path, gguf_type: str) -> Path:
    """``convert_lora_to_gguf.py ADAPTER --base BASE --outfile OUTFILE --outtype TYPE``, called in-process."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    if config.get("use_dora"):
        raise ExportError("DoRA adapters have no GGUF LoRA form in llama.cpp: use --format gguf (merged).")
    alpha = float(config["lora_alpha"])
    if config.get("use_rslora"):
        # llama.cpp scales a LoRA by alpha / rank; rsLoRA trained with alpha / sqrt(rank), so rescale alpha.
        alpha *= math.sqrt(float(config["r"]))
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        raise ExportError("Adapters with per-module ranks or alphas cannot be written as one GGUF LoRA.")
    from openft.models.llama_cpp_convert.convert_lora_to_gguf import convert_lora

    with _quiet_converter():
        try:
            return convert_lora(adapter_dir, base_dir, outfile, gguf_type, alpha)
        except NotImplementedError as error:
            raise ExportError(f"llama.cpp's converter does not support this base model: {error}") from None


def _file_type(gguf, gguf_type: str):
    return {
        "f32": gguf.LlamaFileType.ALL_F32,
        "f16": gguf.LlamaFileType.MOSTLY_F16,
        "bf16": gguf.LlamaFileType.MOSTLY_BF16,
        "q8_0": gguf.LlamaFileType.MOSTLY_Q8_0,
    }[gguf_type]


@contextlib.contextmanager
def _quiet_converter():
    """The converter logs every tensor at INFO; keep the CLI's output to what openft prints."""
    loggers = [logging.getLogger(name) for name in ("hf-to-gguf", "lora-to-gguf", "gguf.vocab", "gguf.gguf_writer")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for log, level in zip(loggers, levels, strict=True):
            log.setLevel(level)

"""`openft export MODEL --out DIR`: a fine-tuned model as a merged Hugging Face folder, a PEFT adapter, or GGUF.

Runs on the machine that holds the artifacts (it reads the openft home, $OPENFT_HOME, directly).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from openft.cli.client import fail, stderr, stdout

GGUF_TYPE_FOR_DTYPE = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}


class Format(StrEnum):
    merged = "merged"
    adapter = "adapter"
    both = "both"
    gguf = "gguf"
    gguf_adapter = "gguf-adapter"


class GgufType(StrEnum):
    f32 = "f32"
    f16 = "f16"
    bf16 = "bf16"
    q8_0 = "q8_0"


class Dtype(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def export(
    model: str = typer.Argument(..., help="Fine-tuned model (ft:...) or checkpoint (ft:...:ckpt-step-N)."),
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="Folder to write merged/ and adapter/ into."),
    fmt: Format = typer.Option(
        Format.both,
        "--format",
        help="merged, adapter, both; gguf (one llama.cpp file, LoRA merged) or gguf-adapter (GGUF LoRA + base GGUF).",
    ),
    dtype: Dtype = typer.Option(Dtype.float32, "--dtype", help="Weight dtype of the merged model."),
    gguf_type: GgufType | None = typer.Option(
        None, "--gguf-type", help="GGUF tensor type: f32, f16, bf16 or q8_0 (default: from --dtype)."
    ),
    force: bool = typer.Option(False, "--force", help="Replace existing merged/ or adapter/ folders."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Write a fine-tuned model for plain transformers, PEFT, vLLM, or llama.cpp/Ollama (GGUF)."""
    if fmt in (Format.gguf, Format.gguf_adapter):
        _export_gguf(model, out, fmt, (gguf_type or GgufType(GGUF_TYPE_FOR_DTYPE[dtype.value])).value, force, as_json)
        return
    if gguf_type is not None:
        raise fail("--gguf-type applies to --format gguf or gguf-adapter only.")
    from openft.models.export import ExportError, export_model
    from openft.models.loading import ModelUnavailable
    from openft.models.registry import ModelNotFound
    from openft.store.db import upgrade_database

    upgrade_database()
    status = stderr().status(f"Exporting {model}", spinner="dots")
    try:
        with status:
            result = export_model(model, out, fmt.value, dtype=dtype.value, overwrite=force)
    except ExportError as error:
        raise fail(str(error)) from None
    except (ModelNotFound, ModelUnavailable) as error:
        raise fail(f"The base model of '{model}' is not available: {error}") from None
    written = {"merged": result.merged_dir, "adapter": result.adapter_dir}
    if as_json:
        paths = {name: str(path) if path else None for name, path in written.items()}
        typer.echo(
            json.dumps(
                {"model": model, "base_model": result.source.base_model, **paths, "notes": result.notes}, indent=2
            )
        )
        return
    console = stdout()
    for note in result.notes:
        console.print(f"[yellow]{note}[/yellow]")
    if result.merged_dir:
        console.print(f"merged model: {result.merged_dir}", highlight=False)
        console.print(
            f"  AutoModelForCausalLM.from_pretrained('{result.merged_dir}')  |  vllm serve {result.merged_dir}",
            highlight=False,
            markup=False,
        )
    if result.adapter_dir:
        console.print(f"adapter:      {result.adapter_dir}", highlight=False)
        console.print(
            f"  PeftModel.from_pretrained(base, '{result.adapter_dir}')  (base: {result.source.base_model})",
            highlight=False,
            markup=False,
        )


def _export_gguf(model: str, out: Path, fmt: Format, gguf_type: str, force: bool, as_json: bool) -> None:
    from openft.models.export import ExportError
    from openft.models.gguf_export import export_gguf
    from openft.models.loading import ModelUnavailable
    from openft.models.registry import ModelNotFound
    from openft.store.db import upgrade_database

    upgrade_database()
    what = "model" if fmt == Format.gguf else "adapter"
    try:
        with stderr().status(f"Exporting {model} as GGUF ({gguf_type})", spinner="dots"):
            result = export_gguf(model, out, what, gguf_type=gguf_type, overwrite=force)  # type: ignore[arg-type]
    except ExportError as error:
        raise fail(str(error)) from None
    except (ModelNotFound, ModelUnavailable) as error:
        raise fail(f"The base model of '{model}' is not available: {error}") from None
    files = {"model": result.model_file, "adapter": result.adapter_file, "base": result.base_file}
    if as_json:
        paths = {f"gguf_{name}": str(path) if path else None for name, path in files.items()}
        payload = {"model": model, "base_model": result.source.base_model, "gguf_type": gguf_type, **paths}
        typer.echo(json.dumps({**payload, "notes": result.notes}, indent=2))
        return
    console = stdout()
    for note in result.notes:
        console.print(f"[yellow]{note}[/yellow]")
    if result.model_file:
        console.print(f"GGUF model:   {result.model_file}", highlight=False)
        console.print(f"  llama-server -m {result.model_file}  |  Ollama: FROM {result.model_file}", highlight=False)
    if result.adapter_file:
        console.print(f"GGUF adapter: {result.adapter_file}  (base: {result.base_file})", highlight=False)
        console.print(f"  llama-server -m {result.base_file} --lora {result.adapter_file}", highlight=False)

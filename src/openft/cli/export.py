"""`openft export MODEL --out DIR`: a fine-tuned model as a merged Hugging Face folder and/or a PEFT adapter.

Runs on the machine that holds the artifacts (it reads the openft home, $OPENFT_HOME, directly).
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path

import typer

from openft.cli.client import fail, stderr, stdout


class Format(StrEnum):
    merged = "merged"
    adapter = "adapter"
    both = "both"


class Dtype(StrEnum):
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


def export(
    model: str = typer.Argument(..., help="Fine-tuned model (ft:...) or checkpoint (ft:...:ckpt-step-N)."),
    out: Path = typer.Option(..., "--out", "-o", file_okay=False, help="Folder to write merged/ and adapter/ into."),
    fmt: Format = typer.Option(Format.both, "--format", help="merged, adapter or both."),
    dtype: Dtype = typer.Option(Dtype.float32, "--dtype", help="Weight dtype of the merged model."),
    force: bool = typer.Option(False, "--force", help="Replace existing merged/ or adapter/ folders."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON for scripts."),
) -> None:
    """Write a fine-tuned model for plain transformers, PEFT or vLLM (GGUF: see docs/cli.md)."""
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

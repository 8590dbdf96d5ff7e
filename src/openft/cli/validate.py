"""`openft validate FILE`: the upload-time validation report, offline."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console

from openft.config import get_settings


def validate(
    file: Path = typer.Argument(..., exists=True, dir_okay=False, help="Training data (.jsonl)."),
    model: str = typer.Option(None, "--model", help="Base model whose tokenizer/context to check against."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Check a training file line by line and show its token statistics. Exit code 1 when it has errors."""
    from openft.data.report_table import render_report
    from openft.data.validate import validate_file
    from openft.models.registry import ModelNotFound, get_base_model, load_tokenizer

    name = model or get_settings().validation_model
    try:
        base = get_base_model(name)
    except ModelNotFound:
        typer.echo(f"Unknown base model '{name}'. See `openft models list`.", err=True)
        raise typer.Exit(2) from None
    report = validate_file(
        file, tokenizer=load_tokenizer(base.name), context_length=base.context_length, base_model=base.name
    )
    if as_json:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        render_report(report, Console())
    raise typer.Exit(0 if report.ok else 1)

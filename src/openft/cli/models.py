"""`openft models list|rm`: base models and this organization's fine-tuned models."""

from __future__ import annotations

import typer
from rich.table import Table
from rich.text import Text

from openft.cli.client import (
    ApiKeyOption,
    BaseUrlOption,
    JsonOption,
    api_errors,
    make_client,
    print_json,
    stdout,
    timestamp,
)

app = typer.Typer(help="List and delete models.", no_args_is_help=True)


@app.command("list")
def list_(as_json: bool = JsonOption, base_url: str = BaseUrlOption, api_key: str = ApiKeyOption) -> None:
    """Base models (owned by openft) and your fine-tuned models."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        models = list(client.models.list())
    if as_json:
        print_json(models)
        return
    table = Table("model", "kind", "owned by", "created")
    table.columns[0].overflow = "fold"
    for model in models:
        kind = "fine-tuned" if model.id.startswith("ft:") else "base"
        table.add_row(Text(model.id), kind, model.owned_by, timestamp(model.created))
    stdout().print(table)


@app.command("rm")
def rm(
    name: str = typer.Argument(..., help="Fine-tuned model name (ft:...)."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Delete a fine-tuned model with its checkpoints and files (base models cannot be deleted)."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        deleted = client.models.delete(name)
    if as_json:
        print_json(deleted)
    else:
        typer.echo(f"Deleted {deleted.id}")

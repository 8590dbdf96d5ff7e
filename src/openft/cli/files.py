"""`openft files upload|list|show|rm`: training files and their validation reports."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn
from rich.table import Table
from rich.text import Text

from openft.cli.client import (
    ApiKeyOption,
    BaseUrlOption,
    JsonOption,
    api_errors,
    make_client,
    print_json,
    stderr,
    stdout,
    timestamp,
)

app = typer.Typer(help="Upload, list, show and delete files.", no_args_is_help=True)


class ProgressReader(io.RawIOBase):
    """A file that advances a progress bar as the HTTP client reads it (a retry re-reads from 0)."""

    def __init__(self, path: Path, on_position: Any) -> None:
        self._file = open(path, "rb")  # noqa: SIM115 - closed by close()
        self._on_position = on_position
        self.name = str(path)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        chunk = self._file.read(size)
        self._on_position(self._file.tell())
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = self._file.seek(offset, whence)
        self._on_position(position)
        return position

    def tell(self) -> int:
        return self._file.tell()

    def fileno(self) -> int:
        return self._file.fileno()

    def close(self) -> None:
        self._file.close()
        super().close()


def fetch_validation(client: Any, file_id: str) -> dict[str, Any]:
    """openft's full validation report (GET /v1/files/{id}/validation; not part of the OpenAI SDK)."""
    return client.get(f"/files/{file_id}/validation", cast_to=object)


def render_validation(validation: dict[str, Any], console: Console) -> None:
    from openft.data.report import ValidationReport
    from openft.data.report_table import render_report

    render_report(ValidationReport.model_validate(validation), console)


def _file_table(files: list[Any]) -> Table:
    table = Table("id", "filename", "purpose", "bytes", "status", "created", "details")
    for column in table.columns:  # ids and names are copied into other commands: fold them, never cut them
        column.overflow = "fold"
    table.columns[0].no_wrap = True
    for f in files:
        style = {"error": "red", "processed": "green"}.get(f.status, "")
        table.add_row(
            f.id,
            Text(f.filename),
            f.purpose,
            f"{f.bytes:,}",
            Text(f.status, style=style),
            timestamp(f.created_at),
            Text(f.status_details or ""),
        )
    return table


@app.command("upload")
def upload(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, readable=True, help="File to upload (.jsonl)."),
    purpose: str = typer.Option("fine-tune", "--purpose", help="fine-tune, evals, batch, user_data, ..."),
    model: str = typer.Option(None, "--model", help="Base model to validate fine-tune files against."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Upload a file. Fine-tune files are validated on arrival: exit code 1 and the report when they fail."""
    client = make_client(base_url, api_key)
    size = path.stat().st_size
    extra_body = {"model": model} if model else None
    with api_errors(base_url):
        progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            console=stderr(),
            transient=True,
            disable=as_json,
        )
        with progress:
            task = progress.add_task(f"Uploading {path.name}", total=size)
            reader = ProgressReader(path, lambda position: _advance(progress, task, position, size))
            try:
                uploaded = client.files.create(file=(path.name, reader), purpose=purpose, extra_body=extra_body)
            finally:
                reader.close()
        validation = fetch_validation(client, uploaded.id) if purpose == "fine-tune" else None
    failed = uploaded.status == "error"
    if as_json:
        print_json({**uploaded.model_dump(mode="json"), **({"validation": validation} if validation else {})})
        raise typer.Exit(1 if failed else 0)
    console = stdout()
    style = "red" if failed else "green"
    console.print(f"{uploaded.id}  [{style}]{uploaded.status}[/{style}]  {path.name}  {uploaded.bytes:,} bytes")
    if validation is not None and (failed or validation.get("warnings")):
        render_validation(validation, console)
    elif uploaded.status_details:
        console.print(Text(uploaded.status_details))
    if failed:
        raise typer.Exit(1)


def _advance(progress: Progress, task: Any, position: int, size: int) -> None:
    progress.update(task, completed=position)
    if position >= size:
        progress.update(task, description="Validating" if size else "Uploading")


@app.command("list")
def list_(
    purpose: str = typer.Option(None, "--purpose", help="Only files with this purpose."),
    limit: int = typer.Option(100, "--limit", min=1, help="At most this many files, newest first."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """List files, newest first."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        page = client.files.list(purpose=purpose, limit=limit) if purpose else client.files.list(limit=limit)
        files = page.data[:limit]
    if as_json:
        print_json(files)
    else:
        stdout().print(_file_table(files))


@app.command("show")
def show(
    file_id: str = typer.Argument(..., help="File id (file-...)."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """One file, with its full validation report for fine-tune files."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        found = client.files.retrieve(file_id)
        validation = fetch_validation(client, file_id) if found.purpose == "fine-tune" else None
    if as_json:
        print_json({**found.model_dump(mode="json"), **({"validation": validation} if validation else {})})
        return
    console = stdout()
    console.print(_file_table([found]))
    if validation is not None:
        render_validation(validation, console)


@app.command("rm")
def rm(
    file_id: str = typer.Argument(..., help="File id (file-...)."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Delete a file (jobs that already used it keep their results)."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        deleted = client.files.delete(file_id)
    if as_json:
        print_json(deleted)
    else:
        typer.echo(f"Deleted {deleted.id}")

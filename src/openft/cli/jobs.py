"""`openft jobs ...`: create, inspect, follow and control fine-tuning jobs."""

from __future__ import annotations

import json
import time
from enum import StrEnum
from typing import Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from openft.cli.client import (
    ApiKeyOption,
    BaseUrlOption,
    JsonOption,
    api_errors,
    fail,
    make_client,
    print_json,
    stderr,
    stdout,
    timestamp,
)

app = typer.Typer(help="Create, follow and control fine-tuning jobs.", no_args_is_help=True)

TERMINAL = ("succeeded", "failed", "cancelled")
EXIT_PAUSED = 3
STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan", "paused": "magenta"}


class Method(StrEnum):
    supervised = "supervised"
    dpo = "dpo"


def _status(status: str) -> Text:
    return Text(status, style=STATUS_STYLE.get(status, ""))


def _job_table(jobs: list[Any]) -> Table:
    table = Table("id", "model", "status", "fine-tuned model", "created", "finished")
    for column in table.columns:  # ids and names are copied into other commands: fold them, never cut them
        column.overflow = "fold"
    table.columns[0].no_wrap = True
    for job in jobs:
        table.add_row(
            job.id,
            Text(job.model),
            _status(job.status),
            Text(job.fine_tuned_model or ""),
            timestamp(job.created_at),
            timestamp(job.finished_at),
        )
    return table


def _job_details(job: Any) -> Table:
    table = Table(show_header=False, title=job.id, title_justify="left")
    table.add_column("field", style="bold")
    table.add_column("value", overflow="fold")
    method = job.method.type if job.method else "supervised"
    hyperparameters = job.method.model_dump()[method]["hyperparameters"] if job.method else job.hyperparameters
    rows = {
        "status": _status(job.status),
        "model": job.model,
        "fine-tuned model": job.fine_tuned_model or "",
        "method": method,
        "training file": job.training_file,
        "validation file": job.validation_file or "",
        "hyperparameters": ", ".join(f"{k}={v}" for k, v in (hyperparameters or {}).items() if v is not None),
        "seed": str(job.seed),
        "trained tokens": f"{job.trained_tokens:,}" if job.trained_tokens else "",
        "created": timestamp(job.created_at),
        "finished": timestamp(job.finished_at),
        "result files": ", ".join(job.result_files or []),
        "metadata": json.dumps(job.metadata) if job.metadata else "",
    }
    if job.error and job.error.message:
        rows["error"] = Text(job.error.message, style="red")
    for name, value in rows.items():
        table.add_row(name, value if isinstance(value, Text) else Text(value))
    return table


def _parse_metadata(pairs: list[str]) -> dict[str, str] | None:
    metadata = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise fail(f"--metadata expects KEY=VALUE, got '{pair}'.", 2)
        metadata[key] = value
    return metadata or None


@app.command("create")
def create(
    model: str = typer.Option(..., "--model", help="Base model to fine-tune (see `openft models list`)."),
    training_file: str = typer.Option(..., "--training-file", help="Id of an uploaded fine-tune file."),
    validation_file: str = typer.Option(None, "--validation-file", help="Id of a held-out fine-tune file."),
    suffix: str = typer.Option(None, "--suffix", help="Up to 64 characters, part of the fine-tuned model name."),
    method: Method = typer.Option(Method.supervised, "--method", help="Training method."),
    epochs: int = typer.Option(None, "--epochs", min=1, help="Passes over the data (default: auto)."),
    batch_size: int = typer.Option(None, "--batch-size", min=1, help="Examples per step (default: auto)."),
    lr_multiplier: float = typer.Option(None, "--lr-multiplier", help="Learning-rate multiplier (default: auto)."),
    lora_rank: int = typer.Option(None, "--lora-rank", min=0, help="LoRA rank; 0 trains every weight (default: 16)."),
    beta: float = typer.Option(None, "--beta", help="DPO only: how far the model may move from the base."),
    seed: int = typer.Option(None, "--seed", help="Seed for a reproducible run."),
    metadata: list[str] = typer.Option([], "--metadata", help="KEY=VALUE to tag the job (repeatable)."),
    follow_job: bool = typer.Option(False, "--follow", help="Stay and show training progress until it ends."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Start a fine-tuning job."""
    given = {
        "n_epochs": epochs,
        "batch_size": batch_size,
        "learning_rate_multiplier": lr_multiplier,
        "lora_rank": lora_rank,
        "beta": beta,
    }
    if beta is not None and method is not Method.dpo:
        raise fail("--beta applies to --method dpo only.", 2)
    hyperparameters = {name: value for name, value in given.items() if value is not None}
    request: dict[str, Any] = {
        "model": model,
        "training_file": training_file,
        "method": {"type": method.value, method.value: {"hyperparameters": hyperparameters}},
    }
    optional = {
        "validation_file": validation_file,
        "suffix": suffix,
        "seed": seed,
        "metadata": _parse_metadata(metadata),
    }
    request.update({name: value for name, value in optional.items() if value is not None})
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        job = client.fine_tuning.jobs.create(**request)
    if follow_job:
        if not as_json:
            stdout().print(f"Created {job.id} ({job.status})")
        _follow(client, job.id, base_url, as_json)
        return
    if as_json:
        print_json(job)
    else:
        stdout().print(f"Created {job.id} ({job.status}). Follow it with: openft jobs follow {job.id}")


@app.command("list")
def list_(
    limit: int = typer.Option(20, "--limit", min=1, max=100, help="At most this many jobs, newest first."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """List fine-tuning jobs, newest first."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        jobs = client.fine_tuning.jobs.list(limit=limit).data
    if as_json:
        print_json(jobs)
    else:
        stdout().print(_job_table(jobs))


@app.command("show")
def show(
    job_id: str = typer.Argument(..., help="Job id (ftjob-...)."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """One job: status, hyperparameters, result."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        job = client.fine_tuning.jobs.retrieve(job_id)
    if as_json:
        print_json(job)
    else:
        stdout().print(_job_details(job))


def _all_events(client: Any, job_id: str, limit: int) -> list[Any]:
    """Up to ``limit`` newest events, returned oldest first (the order people read a log in)."""
    events = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=min(limit, 1000)):
        events.append(event)
        if len(events) >= limit:
            break
    return events[::-1]


@app.command("events")
def events(
    job_id: str = typer.Argument(..., help="Job id (ftjob-...)."),
    limit: int = typer.Option(100, "--limit", min=1, help="The newest N events."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """A job's event log, oldest first."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        found = _all_events(client, job_id, limit)
    if as_json:
        print_json(found)
        return
    table = Table("time", "level", "type", "message")
    for event in found:
        style = {"error": "red", "warn": "yellow"}.get(event.level, "")
        table.add_row(
            timestamp(event.created_at), Text(event.level, style=style), event.type or "", Text(event.message)
        )
    stdout().print(table)


@app.command("checkpoints")
def checkpoints(
    job_id: str = typer.Argument(..., help="Job id (ftjob-...)."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """A job's checkpoints, newest first: each is a model you can chat with, evaluate or export."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        found = list(client.fine_tuning.jobs.checkpoints.list(job_id, limit=100))
    if as_json:
        print_json(found)
        return
    table = Table("step", "model", "train loss", "valid loss", "created")
    table.columns[1].overflow = "fold"
    for checkpoint in found:
        metrics = checkpoint.metrics.model_dump() if checkpoint.metrics else {}
        table.add_row(
            str(checkpoint.step_number),
            Text(checkpoint.fine_tuned_model_checkpoint),
            _number(metrics.get("train_loss")),
            _number(metrics.get("valid_loss")),
            timestamp(checkpoint.created_at),
        )
    stdout().print(table)


def _number(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def _control(action: str, job_id: str, as_json: bool, base_url: str | None, api_key: str | None) -> None:
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        job = getattr(client.fine_tuning.jobs, action)(job_id)
    if as_json:
        print_json(job)
    else:
        stdout().print(Text.assemble(f"{job.id} ", _status(job.status)))


@app.command("cancel")
def cancel(
    job_id: str = typer.Argument(..., help="Job id."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Cancel a job; its training process is stopped."""
    _control("cancel", job_id, as_json, base_url, api_key)


@app.command("pause")
def pause(
    job_id: str = typer.Argument(..., help="Job id."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Pause a running job after saving a checkpoint."""
    _control("pause", job_id, as_json, base_url, api_key)


@app.command("resume")
def resume(
    job_id: str = typer.Argument(..., help="Job id."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Resume a paused job from its last checkpoint."""
    _control("resume", job_id, as_json, base_url, api_key)


@app.command("follow")
def follow(
    job_id: str = typer.Argument(..., help="Job id (ftjob-...)."),
    interval: float = typer.Option(1.0, "--interval", min=0.1, help="Seconds between polls."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Show a job live: events as they happen and a progress bar with the loss.

    Exit code 0 when it succeeds, 1 when it fails or is cancelled, 3 when it is paused.
    Ctrl-C stops following; the job goes on.
    """
    _follow(make_client(base_url, api_key), job_id, base_url, as_json, interval)


def _follow(client: Any, job_id: str, base_url: str | None, as_json: bool, interval: float = 1.0) -> None:
    console = stderr() if as_json else stdout()
    progress = Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
        disable=as_json,
    )
    task = progress.add_task("steps", total=None, loss="", visible=False)
    seen: set[str] = set()
    try:
        with api_errors(base_url), progress:
            while True:
                job = client.fine_tuning.jobs.retrieve(job_id)
                for event in _new_events(client, job_id, seen):
                    _show_event(event, progress, task, as_json)
                if job.status in TERMINAL or job.status == "paused":
                    break
                time.sleep(interval)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    if as_json:
        print_json(job)
    else:
        _print_outcome(job)
    if job.status == "paused":
        raise typer.Exit(EXIT_PAUSED)
    if job.status != "succeeded":
        raise typer.Exit(1)


def _new_events(client: Any, job_id: str, seen: set[str]) -> list[Any]:
    """Events not shown yet, oldest first (the API lists newest first; stop at the first one seen)."""
    fresh = []
    for event in client.fine_tuning.jobs.list_events(job_id, limit=100):
        if event.id in seen:
            break
        fresh.append(event)
    seen.update(event.id for event in fresh)
    return fresh[::-1]


def _show_event(event: Any, progress: Progress, task: Any, as_json: bool) -> None:
    if as_json:
        return
    data = event.data if isinstance(event.data, dict) else {}
    if event.type == "metrics" and "step" in data:
        loss = f"loss {data['train_loss']:.4f}" if "train_loss" in data else ""
        if "valid_loss" in data:
            loss += f"  valid {data['valid_loss']:.4f}"
        progress.update(task, completed=data["step"], total=data.get("total_steps"), loss=loss, visible=True)
        if "valid_loss" in data:
            progress.console.print(Text(f"{timestamp(event.created_at)}  {event.message}", style="dim"))
        return
    style = {"error": "red", "warn": "yellow"}.get(event.level, "")
    progress.console.print(Text(f"{timestamp(event.created_at)}  {event.message}", style=style))


def _print_outcome(job: Any) -> None:
    console = stdout()
    if job.status == "succeeded":
        console.print(f"[green]succeeded[/green]: {job.fine_tuned_model}")
        console.print(f"Try it: openft chat {job.fine_tuned_model}", highlight=False)
    elif job.status == "paused":
        console.print(f"[magenta]paused[/magenta]: resume with `openft jobs resume {job.id}`", highlight=False)
    else:
        reason = f": {job.error.message}" if job.error and job.error.message else ""
        stderr().print(Text(f"Job {job.id} {job.status}{reason}", style=STATUS_STYLE.get(job.status, "")))

"""The `openft` command. Each command group lives in its own module."""

from __future__ import annotations

import typer

from openft.cli import chat, evals, export, files, jobs, keys, models, moderation, oai_evals, serve, validate, worker
from openft.cli import distill as distill_cli
from openft.cli import graders as graders_cli
from openft.config import SettingsError

app = typer.Typer(
    name="openft",
    help="Self-hosted fine-tuning that speaks the OpenAI API.",
    no_args_is_help=True,
    add_completion=False,
)
app.command("serve")(serve.serve)
app.command("validate")(validate.validate)
app.command("worker")(worker.worker)
app.add_typer(keys.app, name="keys")
app.add_typer(evals.eval_app, name="eval")
app.add_typer(oai_evals.app, name="evals")
app.add_typer(graders_cli.app, name="graders")
app.command("advise")(evals.advise)
app.add_typer(files.app, name="files")
app.add_typer(jobs.app, name="jobs")
app.add_typer(models.app, name="models")
app.add_typer(moderation.app, name="moderation")
app.add_typer(distill_cli.app, name="distill")
app.command("chat")(chat.chat)
app.command("export")(export.export)


def main() -> None:
    try:
        app()
    except SettingsError as error:  # a bad environment variable: one line naming it, not a traceback
        typer.echo(f"Error: {error}", err=True)
        raise SystemExit(2) from None

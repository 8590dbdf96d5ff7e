"""The `openft` command. Each command group lives in its own module."""

from __future__ import annotations

import typer

from openft.cli import evals, keys, serve, validate, worker

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
app.command("advise")(evals.advise)


def main() -> None:
    app()

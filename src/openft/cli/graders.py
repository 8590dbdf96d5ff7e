"""`openft graders run|validate`: OpenAI's graders API (/v1/fine_tuning/alpha/graders) from the shell."""

from __future__ import annotations

import typer

from openft.cli.client import ApiKeyOption, BaseUrlOption, api_errors, make_client, print_json, stdout
from openft.cli.json_args import load_json_arg

app = typer.Typer(help="Run and validate OpenAI graders (string_check, text_similarity, python, model, multi).",
                  no_args_is_help=True)


@app.command("validate")
def validate(
    grader: str = typer.Argument(..., help="Grader JSON: a file path or inline JSON."),
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Check a grader; a mistake is reported with the field at fault."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        client.fine_tuning.alpha.graders.validate(grader=load_json_arg(grader, "GRADER"))
    typer.echo("valid")


@app.command("run")
def run(
    grader: str = typer.Argument(..., help="Grader JSON: a file path or inline JSON."),
    sample: str = typer.Option(..., "--sample", help="The model output to grade ({{sample.output_text}})."),
    item: str = typer.Option("{}", "--item", help="The dataset item ({{item.*}}): a JSON file or inline JSON."),
    as_json: bool = typer.Option(False, "--json", help="Print the API's answer as JSON."),
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Score one sample; grader errors (e.g. a Python exception) are shown with their details."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        result = client.fine_tuning.alpha.graders.run(
            grader=load_json_arg(grader, "GRADER"), model_sample=sample, item=load_json_arg(item, "--item")
        )
    if as_json:
        print_json(result)
        return
    console = stdout()
    console.print(f"reward {result.reward:g}")
    for name, score in result.sub_rewards.items():
        console.print(f"  {name}: {score}")
    errors = result.metadata.errors.model_dump(by_alias=True)
    raised = [k for k, v in errors.items() if v is True]
    for flag in raised:
        details = errors.get(f"{flag}_details") or errors.get(flag.replace("_error", "_error_type")) or ""
        console.print(f"[red]{flag}[/red] {details}".rstrip(), markup=True, highlight=False)
    if raised:
        raise typer.Exit(1)

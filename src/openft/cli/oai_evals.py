"""`openft evals ...`: OpenAI's Evals API (/v1/evals) from the shell: evals, runs, output items.

(`openft eval ...`, singular, is openft's own fine-tune-or-prompt comparison at /v1/evaluations.)
"""

from __future__ import annotations

import time

import typer
from rich.table import Table

from openft.cli.client import (
    ApiKeyOption,
    BaseUrlOption,
    api_errors,
    fail,
    make_client,
    print_json,
    stdout,
    timestamp,
)
from openft.cli.json_args import load_json_arg

app = typer.Typer(help="OpenAI-compatible evals: testing criteria (graders) and runs.", no_args_is_help=True)
JsonOption = typer.Option(False, "--json", help="Print the API's answer as JSON.")
FINAL = ("completed", "failed", "canceled")


@app.command("create")
def create(
    body: str = typer.Argument(..., help="JSON (file or inline): {name, data_source_config, testing_criteria}."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Create an eval exactly as `client.evals.create(**body)` would."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        created = client.evals.create(**load_json_arg(body, "BODY"))
    print_json(created) if as_json else typer.echo(created.id)


@app.command("list")
def list_(limit: int = typer.Option(20, "--limit", min=1, max=100), as_json: bool = JsonOption,
          base_url: str = BaseUrlOption, api_key: str = ApiKeyOption) -> None:
    """Evals of your organization, oldest first."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        page = client.evals.list(limit=limit)
    if as_json:
        print_json(page.data)
        return
    table = Table("id", "name", "criteria", "created")
    for row in page.data:
        table.add_row(row.id, row.name, ", ".join(c.name for c in row.testing_criteria), timestamp(row.created_at))
    stdout().print(table)


@app.command("delete")
def delete(eval_id: str, base_url: str = BaseUrlOption, api_key: str = ApiKeyOption) -> None:
    """Delete an eval with its runs and output items."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        client.evals.delete(eval_id)
    typer.echo(f"deleted {eval_id}")


def _print_run(run) -> None:
    counts = run.result_counts
    stdout().print(f"{run.id}  {run.status}  total {counts.total}: passed {counts.passed}, failed {counts.failed}, "
                   f"errored {counts.errored}", highlight=False)
    for criterion in run.per_testing_criteria_results:
        total = criterion.passed + criterion.failed
        rate = f"{criterion.passed / total:.0%}" if total else "-"
        stdout().print(f"  {criterion.testing_criteria}: {criterion.passed}/{total} passed ({rate})", highlight=False)
    if run.error:
        stdout().print(f"  error: {run.error.message}", highlight=False)
    stdout().print(f"  report: {run.report_url}", highlight=False)


@app.command("run")
def run(
    eval_id: str,
    data_source: str = typer.Argument(..., help="The run's data_source JSON (file or inline): jsonl or completions."),
    name: str = typer.Option(None, "--name"),
    wait: bool = typer.Option(False, "--wait", help="Wait for the run to finish and print its results."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Start a run of an eval (it runs on a worker); --wait follows it to the end."""
    client = make_client(base_url, api_key)
    extra = {"name": name} if name else {}
    with api_errors(base_url):
        created = client.evals.runs.create(eval_id, data_source=load_json_arg(data_source, "DATA_SOURCE"), **extra)
        while wait and created.status not in FINAL:
            time.sleep(1)
            created = client.evals.runs.retrieve(created.id, eval_id=eval_id)
    if as_json:
        print_json(created)
    else:
        _print_run(created)
    if wait and created.status != "completed":
        raise typer.Exit(1)


@app.command("runs")
def runs(eval_id: str, as_json: bool = JsonOption, base_url: str = BaseUrlOption, api_key: str = ApiKeyOption) -> None:
    """The runs of an eval with their pass counts."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        page = client.evals.runs.list(eval_id, limit=100)
    if as_json:
        print_json(page.data)
        return
    for row in page.data:
        _print_run(row)


@app.command("show")
def show(eval_id: str, run_id: str, as_json: bool = JsonOption, base_url: str = BaseUrlOption,
         api_key: str = ApiKeyOption) -> None:
    """One run: counts, per-criterion pass rates, usage per model."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        found = client.evals.runs.retrieve(run_id, eval_id=eval_id)
    if as_json:
        print_json(found)
        return
    _print_run(found)
    for usage in found.per_model_usage:
        stdout().print(f"  {usage.run_model_name}: {usage.invocation_count} calls, {usage.total_tokens} tokens",
                       highlight=False)


@app.command("items")
def items(
    eval_id: str,
    run_id: str,
    status: str = typer.Option(None, "--status", help="Only 'pass' or 'fail' items."),
    limit: int = typer.Option(20, "--limit", min=1, max=100),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Output items of a run: the sample and each grader's score and reason."""
    if status not in (None, "pass", "fail"):
        raise fail("--status must be 'pass' or 'fail'.", 2)
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        page = client.evals.runs.output_items.list(run_id, eval_id=eval_id, limit=limit,
                                                   **({"status": status} if status else {}))
    if as_json:
        print_json(page.data)
        return
    table = Table("#", "status", "output", "grader results")
    for item in page.data:
        output = " ".join(o.content or "" for o in item.sample.output)[:80]
        results = "\n".join(_result_line(r) for r in item.results)
        table.add_row(str(item.datasource_item_id), item.status, output, results)
    stdout().print(table)


def _result_line(result) -> str:
    reason = (result.model_extra or {}).get("reason") or ""
    return f"{result.name}: {result.score:g} {'pass' if result.passed else 'fail'} - {reason}"[:160]


@app.command("cancel")
def cancel(eval_id: str, run_id: str, base_url: str = BaseUrlOption, api_key: str = ApiKeyOption) -> None:
    """Cancel a queued or running run."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        found = client.evals.runs.cancel(run_id, eval_id=eval_id)
    typer.echo(f"{found.id} {found.status}")

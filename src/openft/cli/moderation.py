"""`openft moderation policy|check|redact`: the organization's moderation of training data (docs/moderation.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from openft.cli.client import ApiKeyOption, BaseUrlOption, JsonOption, api_errors, make_client, print_json, stdout

app = typer.Typer(help="Moderation of training data: policy, local checks, redacted copies.", no_args_is_help=True)


@app.command("policy")
def policy(
    value: str = typer.Argument(None, help="off | warn | block; omit to show the current policy."),
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
    json_output: bool = JsonOption,
) -> None:
    """Show or set the organization's policy: off, warn (findings listed, jobs run) or block (jobs refused)."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        if value is None:
            result = client.get("/moderation/policy", cast_to=object)
        else:
            result = client.post("/moderation/policy", body={"policy": value}, cast_to=object)
    if json_output:
        print_json(result)
    else:
        stdout().print(f"Moderation policy: {result['policy']}")


def findings_table(findings: list[dict[str, Any]]) -> Table:
    table = Table("line", "field", "detector", "category", "excerpt")
    for f in findings:
        table.add_row(str(f["line"]), f["field"] or "", f["detector"], f["category"], f["excerpt"])
    return table


@app.command("check")
def check(
    path: Path = typer.Argument(..., exists=True, dir_okay=False, help="A JSONL training file."),
    json_output: bool = JsonOption,
) -> None:
    """Scan a local JSONL file with the same detectors as the server, without uploading it. Exit 1 on findings."""
    from openft.data.moderation.policy import scan_jsonl

    result = scan_jsonl(path)
    if json_output:
        print_json(result)
    else:
        out = stdout()
        out.print(f"{result['n_findings']} finding(s) on {result['n_lines_flagged']} line(s).")
        if result["findings"]:
            out.print(findings_table(result["findings"]))
    if result["n_findings"]:
        raise typer.Exit(1)


@app.command("redact")
def redact(
    file_id: str = typer.Argument(..., help="A fine-tune file id."),
    keep_harmful: bool = typer.Option(False, "--keep-harmful", help="Keep examples with harmful content."),
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
    json_output: bool = JsonOption,
) -> None:
    """Write a cleaned copy of an uploaded file as a new file (the original is kept)."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        result = client.post(f"/files/{file_id}/redact", body={"drop_harmful": not keep_harmful}, cast_to=object)
    if json_output:
        print_json(result)
        return
    r = result["openft_redaction"]
    stdout().print(
        f"{result['id']} ({result['filename']}, {result['status']}): {r['n_lines_changed']} line(s) cleaned "
        f"{r['replaced']}, {r['n_lines_dropped']} dropped {r['dropped_lines'][:20]}; source {r['source_file']} kept."
    )

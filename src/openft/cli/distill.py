"""`openft distill ...`: distillation from a teacher model into a training file (/v1/distillations;
docs/distillation.md). `openft distill check` validates a prompt file offline, before anything is uploaded."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from openft.cli.client import (
    ApiKeyOption,
    BaseUrlOption,
    JsonOption,
    api_errors,
    fail,
    make_client,
    print_json,
    stdout,
    timestamp,
)
from openft.cli.json_args import load_json_arg

app = typer.Typer(help="Distil a teacher model's answers into a training file for a smaller model.",
                  no_args_is_help=True)  # fmt: skip
FINAL = ("succeeded", "failed", "cancelled")


def _check_file(path: Path) -> int:
    from openft.evals.distill.prompts import PromptFileError, read_prompts

    try:
        return len(read_prompts(path))
    except PromptFileError as exc:
        for problem in exc.problems:
            typer.echo(f"  {problem.describe()}", err=True)
        raise fail(f"{path}: {len(exc.problems)} problem(s); nothing was uploaded.") from None
    except OSError as exc:
        raise fail(f"cannot read {path}: {exc.strerror}", 2) from None


@app.command("check")
def check(path: Path = typer.Argument(..., help="Prompt file: chat JSONL without the final assistant turn.")) -> None:
    """Validate a prompt file offline: every problem with its line and field (exit 1 when there are any)."""
    typer.echo(f"{path}: {_check_file(path)} prompts, no problems")


def print_summary(job: dict[str, Any]) -> None:
    progress, usage = job.get("progress") or {}, job.get("usage") or {}
    out = stdout()
    out.print(f"{job['id']}  {job['status']}  teacher {job['teacher']['model']}  answered "
              f"{progress.get('answered', 0)}/{progress.get('total') or '?'} ({progress.get('from_cache', 0)} from "
              f"the cache, {progress.get('failed', 0)} failed)", highlight=False)  # fmt: skip
    if usage:
        cost = "unpriced" if usage.get("cost_usd") is None else f"${usage['cost_usd']:.4f}"
        out.print(f"  teacher: {usage['teacher_requests']} requests ({usage['retries']} retries), "
                  f"{usage['prompt_tokens']:,} prompt + {usage['completion_tokens']:,} completion tokens, {cost}",
                  highlight=False)  # fmt: skip
    result = job.get("result")
    if result:
        reasons = ", ".join(f"{k} {v}" for k, v in result["dropped_by_reason"].items()) or "none"
        out.print(f"  kept {result['kept']} of {result['prompts']}; dropped {result['dropped']} ({reasons}); "
                  f"failed {result['failed']}", highlight=False)  # fmt: skip
    if job.get("output_file"):
        out.print(f"  training file: {job['output_file']}", highlight=False)
    if job.get("error"):
        out.print(f"  error: {job['error']['message']}", highlight=False)


@app.command("create")
def create(
    teacher_model: str = typer.Option(..., "--teacher-model", help="The teacher's model name."),
    input_file: str = typer.Option(None, "--input-file", help="Uploaded prompt file id."),
    prompts: Path = typer.Option(None, "--prompts", help="Local prompt file: checked, then uploaded (user_data)."),
    teacher_base_url: str = typer.Option(None, "--teacher-base-url",
                                         help="OpenAI-compatible endpoint; omit for a model openft serves."),
    teacher_api_key_env: str = typer.Option(None, "--teacher-api-key-env",
                                            help="Server variable OPENFT_OUTBOUND_KEY_* holding the teacher's key."),
    teacher_api_key: str = typer.Option(None, "--teacher-api-key", envvar="OPENFT_TEACHER_API_KEY",
                                        help="The teacher's API key (stored encrypted on the server)."),
    price_model: str = typer.Option(None, "--price-model", help="Price the teacher's tokens as this hosted model."),
    model: str = typer.Option(None, "--model", help="Student base model whose tokenizer validates the output."),
    temperature: float = typer.Option(None, "--temperature"),
    seed: int = typer.Option(None, "--seed"),
    max_completion_tokens: int = typer.Option(1024, "--max-completion-tokens"),
    concurrency: int = typer.Option(4, "--concurrency", help="Teacher requests in flight at once."),
    filter_json: str = typer.Option(None, "--filter", help="Filter JSON (file or inline), see docs/distillation.md."),
    wait: bool = typer.Option(False, "--wait", help="Wait until it finishes, showing progress."),
    as_json: bool = JsonOption,
    base_url: str = BaseUrlOption,
    api_key: str = ApiKeyOption,
) -> None:
    """Queue a distillation: the teacher answers every prompt; kept answers become a training file."""
    if (input_file is None) == (prompts is None):
        raise fail("Give exactly one of --input-file (an uploaded file) or --prompts (a local file).", 2)
    client = make_client(base_url, api_key)
    teacher = {"model": teacher_model, "base_url": teacher_base_url, "api_key": teacher_api_key,
               "api_key_env": teacher_api_key_env, "price_model": price_model}  # fmt: skip
    body: dict[str, Any] = {"teacher": {k: v for k, v in teacher.items() if v is not None},
                            "max_completion_tokens": max_completion_tokens, "concurrency": concurrency}  # fmt: skip
    for name, value in (("model", model), ("temperature", temperature), ("seed", seed)):
        if value is not None:
            body[name] = value
    if filter_json is not None:
        body["filter"] = load_json_arg(filter_json, "--filter")
    with api_errors(base_url):
        if prompts is not None:
            _check_file(prompts)
            with open(prompts, "rb") as stream:
                input_file = client.files.create(file=(prompts.name, stream), purpose="user_data").id
        body["input_file"] = input_file
        job = client.post("/distillations", body=body, cast_to=object)
        while wait and job["status"] not in FINAL:
            time.sleep(2)
            job = client.get(f"/distillations/{job['id']}", cast_to=object)
            if not as_json:
                progress = job.get("progress") or {}
                typer.echo(f"  {job['status']}: {progress.get('answered', 0)}/{progress.get('total')}", err=True)
    print_json(job) if as_json else print_summary(job)
    if wait and job["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("list")
def list_(limit: int = typer.Option(20, "--limit", min=1, max=100), as_json: bool = JsonOption,
          base_url: str = BaseUrlOption, api_key: str = ApiKeyOption) -> None:  # fmt: skip
    """Your organization's distillations, newest first."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        page = client.get("/distillations", options={"params": {"limit": limit}}, cast_to=object)
    if as_json:
        print_json(page["data"])
        return
    table = Table("id", "status", "teacher", "kept", "cost (USD)", "training file", "created")
    for job in page["data"]:
        result, usage = job.get("result") or {}, job.get("usage") or {}
        cost = usage.get("cost_usd")
        table.add_row(job["id"], job["status"], job["teacher"]["model"], str(result.get("kept", "")),
                      "" if cost is None else f"{cost:.4f}", job.get("output_file") or "",
                      timestamp(job["created_at"]))  # fmt: skip
    stdout().print(table)


@app.command("get")
def get(distillation_id: str, as_json: bool = JsonOption, base_url: str = BaseUrlOption,
        api_key: str = ApiKeyOption) -> None:  # fmt: skip
    """One distillation: status, progress, the teacher's tokens and cost, the result."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        job = client.get(f"/distillations/{distillation_id}", cast_to=object)
    print_json(job) if as_json else print_summary(job)


@app.command("report")
def report(distillation_id: str, as_json: bool = JsonOption, base_url: str = BaseUrlOption,
           api_key: str = ApiKeyOption) -> None:  # fmt: skip
    """What was kept, what was dropped and why, which prompts failed (by line of the prompt file)."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        body = client.get(f"/distillations/{distillation_id}/report", cast_to=object)
    if as_json:
        print_json(body)
        return
    out = stdout()
    out.print(f"{body['distillation_id']}  {body['status']}  kept {body.get('kept', 0)} of {body.get('prompts', 0)}",
              highlight=False)  # fmt: skip
    if body.get("verdicts_from_cache"):
        out.print(f"  {body['verdicts_from_cache']} grader verdicts reused from the cache (no judge call)",
                  highlight=False)  # fmt: skip
    table = Table("line", "outcome", "why")
    for dropped in body.get("dropped_lines") or []:
        table.add_row(str(dropped["line"]), f"dropped ({dropped['rule']})", dropped["reason"] or "")
    for failed in body.get("failed_lines") or []:
        table.add_row(str(failed["line"]), "failed", failed["error"])
    if table.rows:
        out.print(table)


@app.command("cancel")
def cancel(distillation_id: str, base_url: str = BaseUrlOption, api_key: str = ApiKeyOption) -> None:
    """Cancel a queued or running distillation (answers already paid for stay cached)."""
    client = make_client(base_url, api_key)
    with api_errors(base_url):
        print_summary(client.post(f"/distillations/{distillation_id}/cancel", cast_to=object))

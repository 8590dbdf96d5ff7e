"""`openft eval ...` and `openft advise ...`: evaluations and the fine-tune-or-prompt advice, through the API.

The server to talk to comes from --base-url / OPENFT_BASE_URL / OPENAI_BASE_URL (default
http://127.0.0.1:8000/v1) and the key from --api-key / OPENAI_API_KEY, as for the OpenAI SDK.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer

eval_app = typer.Typer(help="Evaluate fine-tuned models against prompting strategies.", no_args_is_help=True)

BaseUrl = typer.Option(None, "--base-url", help="openft API base URL (default $OPENAI_BASE_URL).")
ApiKey = typer.Option(None, "--api-key", help="API key (default $OPENAI_API_KEY).")


def _client(base_url: str | None, api_key: str | None) -> httpx.Client:
    url = base_url or os.environ.get("OPENFT_BASE_URL") or os.environ.get("OPENAI_BASE_URL")
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if not key:
        typer.echo("No API key: pass --api-key or set OPENAI_API_KEY (create one with `openft keys create`).", err=True)
        raise typer.Exit(2)
    return httpx.Client(
        base_url=(url or "http://127.0.0.1:8000/v1").rstrip("/"),
        headers={"Authorization": f"Bearer {key}"},
        timeout=60,
    )


def _call(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        typer.echo(f"Cannot reach {client.base_url}: {exc}. Is `openft serve` running?", err=True)
        raise typer.Exit(2) from None
    if response.status_code >= 400:
        try:
            error = response.json()["error"]
            where = f" (parameter {error['param']})" if error.get("param") else ""
            typer.echo(f"Error {response.status_code}{where}: {error['message']}", err=True)
        except (ValueError, KeyError, TypeError):
            typer.echo(f"Error {response.status_code}: {response.text}", err=True)
        raise typer.Exit(1)
    return response


def _print_summary(run: dict[str, Any]) -> None:
    progress = run.get("progress") or {}
    typer.echo(f"{run['id']}  {run['status']}  {progress.get('completed', 0)}/{progress.get('total') or '?'}")
    if run.get("error"):
        typer.echo(f"  error: {run['error']['message']}")
    summary = run.get("summary")
    if summary:
        for position, name in enumerate(summary["ranking"], start=1):
            s = next(x for x in summary["strategies"] if x["name"] == name)
            quality = s["quality"]["mean"] if s["quality"] else float("nan")
            typer.echo(
                f"  {position}. {name}: {summary['metric']} {quality:.3f}, "
                f"{s['mean_prompt_tokens'] or 0:.0f} prompt tokens, p50 {s['latency_p50_s'] or 0:.3f} s"
            )
        for change in (summary.get("forgetting") or {}).get("comparisons", []):
            typer.echo(f"  {'WARNING: ' if change['forgot'] else ''}{change['verdict']}")


@eval_app.command("create")
def create(
    eval_file: str = typer.Option(..., "--eval-file", help="Held-out chat JSONL file id (purpose fine-tune/evals)."),
    model: str = typer.Option(..., "--model", help="Base model for the prompting strategies."),
    training_file: str = typer.Option(None, "--training-file", help="File id the few-shot examples come from."),
    fine_tuned: list[str] = typer.Option([], "--fine-tuned", help="Fine-tuned model or checkpoint (repeatable)."),
    strategy: list[str] = typer.Option([], "--strategy", help="zero-shot, few-shot, retrieval-few-shot, ..."),
    metric: list[str] = typer.Option([], "--metric", help="Metric name (repeatable); default by answer shape."),
    k: int = typer.Option(3, "--k", help="Few-shot examples per prompt."),
    max_tokens: int = typer.Option(256, "--max-tokens"),
    max_examples: int = typer.Option(None, "--max-examples", help="Evaluate only the first N examples."),
    document: list[str] = typer.Option([], "--document", help="Knowledge document file id for RAG (repeatable)."),
    rag_k: int = typer.Option(None, "--rag-k", help="Passages retrieved per question by RAG (default 3)."),
    tool_choice: str = typer.Option(None, "--tool-choice", help="auto or required, for held-out examples with tools."),
    rival: list[str] = typer.Option([], "--rival", help="Another (bigger) base model to compare with (repeatable)."),
    forgetting_check: bool = typer.Option(
        True, "--forgetting-check/--no-forgetting-check", help="Score fine-tuned models and bases on the general set."
    ),
    forgetting_items: int = typer.Option(None, "--forgetting-items", help="General-set items (default 100, max 400)."),
    wait: bool = typer.Option(False, "--wait", help="Wait until it finishes and print the ranking."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    base_url: str = BaseUrl,
    api_key: str = ApiKey,
) -> None:
    """Queue an evaluation run."""
    body: dict[str, Any] = {"eval_file": eval_file, "model": model, "k": k, "max_tokens": max_tokens}
    optional = {
        "training_file": training_file,
        "fine_tuned_models": fine_tuned or None,
        "strategies": strategy or None,
        "metrics": metric or None,
        "max_examples": max_examples,
        "documents": document or None,
        "rag_k": rag_k,
        "tool_choice": tool_choice,
        "rival_models": rival or None,
        "forgetting_check": None if forgetting_check else False,
        "forgetting_items": forgetting_items,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    with _client(base_url, api_key) as client:
        run = _call(client, "POST", "/evaluations", json=body).json()
        while wait and run["status"] in ("queued", "running"):
            time.sleep(2)
            run = _call(client, "GET", f"/evaluations/{run['id']}").json()
    typer.echo(json.dumps(run, indent=2)) if as_json else _print_summary(run)


@eval_app.command("list")
def list_(base_url: str = BaseUrl, api_key: str = ApiKey) -> None:
    """List this organization's evaluations, newest first."""
    with _client(base_url, api_key) as client:
        for run in _call(client, "GET", "/evaluations").json()["data"]:
            _print_summary(run)


@eval_app.command("get")
def get(run_id: str, as_json: bool = typer.Option(False, "--json"), base_url: str = BaseUrl, api_key: str = ApiKey):
    """Show one evaluation: status, progress and the ranking when done."""
    with _client(base_url, api_key) as client:
        run = _call(client, "GET", f"/evaluations/{run_id}").json()
    typer.echo(json.dumps(run, indent=2)) if as_json else _print_summary(run)


@eval_app.command("cancel")
def cancel(run_id: str, base_url: str = BaseUrl, api_key: str = ApiKey) -> None:
    """Cancel a queued or running evaluation."""
    with _client(base_url, api_key) as client:
        _print_summary(_call(client, "POST", f"/evaluations/{run_id}/cancel").json())


@eval_app.command("report")
def report(
    run_id: str,
    fmt: str = typer.Option("md", "--format", help="json, md or html."),
    output: Path = typer.Option(None, "--output", "-o", help="Write to this file instead of stdout."),
    requests_per_day: float = typer.Option(1000, "--requests-per-day", help="Expected traffic for the costs."),
    base_url: str = BaseUrl,
    api_key: str = ApiKey,
) -> None:
    """The report with plots and costs (an HTML report is one self-contained page)."""
    with _client(base_url, api_key) as client:
        params = {"format": fmt, "requests_per_day": requests_per_day}
        text = _call(client, "GET", f"/evaluations/{run_id}/report", params=params).text
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
        typer.echo(f"Wrote {output}")


def advise(
    run_id: str = typer.Argument(..., help="A succeeded evaluation's id."),
    requests_per_day: float = typer.Option(..., "--requests-per-day", help="Expected traffic."),
    horizon_months: float = typer.Option(12, "--horizon-months", help="Months the training cost is spread over."),
    device: str = typer.Option("cpu", "--device", help="cpu (priced per vCPU-hour) or gpu (per GPU-hour)."),
    n_devices: int = typer.Option(1, "--n-devices"),
    concurrency: float = typer.Option(1, "--concurrency", help="Requests served at once locally."),
    price_per_device_hour: float = typer.Option(None, "--price-per-device-hour", help="USD; default: openft's."),
    hosted_training_model: str = typer.Option("gpt-4o-mini", "--hosted-training-model"),
    as_json: bool = typer.Option(False, "--json", help="Print JSON."),
    base_url: str = BaseUrl,
    api_key: str = ApiKey,
) -> None:
    """Fine-tune or prompt? Monthly costs, training cost, break-even volume and a recommendation."""
    body = {
        "requests_per_day": requests_per_day,
        "horizon_months": horizon_months,
        "device": device,
        "n_devices": n_devices,
        "concurrency": concurrency,
        "hosted_training_model": hosted_training_model,
    }
    if price_per_device_hour is not None:
        body["price_per_device_hour"] = price_per_device_hour
    with _client(base_url, api_key) as client:
        advice = _call(client, "POST", f"/evaluations/{run_id}/advice", json=body).json()
    if as_json:
        typer.echo(json.dumps(advice, indent=2))
        return
    for deployment, rec in advice["recommendations"].items():
        typer.echo(f"[{deployment}] {rec['headline']}")
        for reason in rec["reasons"]:
            typer.echo(f"  - {reason}")

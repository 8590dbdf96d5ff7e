"""How long a fine-tuning job waits before it trains, and how long a server takes to answer.

A live `openft serve` (embedded worker, a tiny randomly initialised Llama registered as the base model) runs
N one-step jobs back to back, twice: with the worker's forkserver (the training stack imported once, each
task's child forked from it: the default) and with OPENFT_WORKER_PRELOAD=0 (a fresh interpreter per task:
the baseline, measured in the same run). Per job: seconds from create to the first training step and to
`succeeded`. Also: seconds from `openft serve` to a 200 on /health, and the server's memory then (the API
process no longer imports torch until it serves a model).

Prints JSON. `python bench/job_start.py [N]` (default 3).
"""

from __future__ import annotations

import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fixtures.models import build_tiny_model_dir  # noqa: E402
from tests.fixtures.server import register_model, start_server, stop_server  # noqa: E402
from tests.jobs.helpers import wait_until  # noqa: E402

ROWS = b"".join(
    json.dumps({"messages": [{"role": "user", "content": f"Code {i}?"},
                             {"role": "assistant", "content": f"ITEM-{i:03d}"}]}).encode() + b"\n"
    for i in range(10)
)


def run_jobs(model_dir: Path, n: int, preload: bool) -> dict:
    home = Path(tempfile.mkdtemp(prefix="openft-bench-"))
    register_model(home, "tiny-llama", model_dir)
    started = time.monotonic()
    server = start_server(home, {"OPENFT_VALIDATION_MODEL": "tiny-llama",
                                 "OPENFT_WORKER_PRELOAD": "1" if preload else "0"})
    start_s = time.monotonic() - started
    rss_mb = server.rss_bytes() / 2**20
    try:
        client = server.client(server.create_key("bench"), timeout=120)
        file_id = client.files.create(file=("train.jsonl", io.BytesIO(ROWS)), purpose="fine-tune").id
        first_step, done = [], []
        for _ in range(n):
            created = time.monotonic()
            job = client.fine_tuning.jobs.create(model="tiny-llama", training_file=file_id, method={
                "type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1, "batch_size": 10}}})
            wait_until(lambda job_id=job.id, jobs=client.fine_tuning.jobs: any(
                e.type == "metrics" for e in jobs.list_events(job_id)), 600, "the first step", interval=0.05)
            first_step.append(time.monotonic() - created)
            final = wait_until(lambda job_id=job.id: (j := client.fine_tuning.jobs.retrieve(job_id)).status
                               in ("succeeded", "failed", "cancelled") and j, 600, "the job's end", interval=0.05)
            assert final.status == "succeeded", final.error
            done.append(time.monotonic() - created)
    finally:
        stop_server(server)
    return {"server_start_s": round(start_s, 2), "server_rss_mb": round(rss_mb, 1),
            "first_step_s": [round(x, 2) for x in first_step], "succeeded_s": [round(x, 2) for x in done],
            "median_first_step_s": round(statistics.median(first_step), 2),
            "median_succeeded_s": round(statistics.median(done), 2)}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    model_dir = build_tiny_model_dir()
    forked = run_jobs(model_dir, n, preload=True)
    fresh = run_jobs(model_dir, n, preload=False)
    print(json.dumps({
        "jobs": n,
        "forkserver": forked,
        "fresh_interpreter_baseline": fresh,
        "first_step_speedup": round(fresh["median_first_step_s"] / forked["median_first_step_s"], 2),
    }, indent=2))


if __name__ == "__main__":
    main()

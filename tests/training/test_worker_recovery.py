"""A worker killed with SIGKILL mid-training: after a restart the job resumes from its checkpoint."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time

from tests.fixtures.server import register_model, start_server, stop_server


def start_worker(env: dict[str, str], log_path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "openft", "worker", "--poll-seconds", "0.3"],
        env=env,
        stdout=open(log_path, "a"),
        stderr=subprocess.STDOUT,
    )


def test_killed_worker_job_resumes_from_checkpoint(tmp_path, tiny_model_dir):
    register_model(tmp_path, "tiny-llama", tiny_model_dir)
    server = start_server(
        tmp_path,
        {"OPENFT_VALIDATION_MODEL": "tiny-llama", "OPENFT_EMBEDDED_WORKER": "0", "OPENFT_WORKER_STALE_SECONDS": "3"},
    )
    workers: list[subprocess.Popen] = []
    try:
        client = server.client(server.create_key("recovery"), timeout=60)
        rows = [
            {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
            for i in range(10)
        ]
        data = b"".join(json.dumps(r).encode() + b"\n" for r in rows)
        training_file = client.files.create(file=("t.jsonl", io.BytesIO(data)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            model="tiny-llama",
            training_file=training_file,
            method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 20, "batch_size": 1}}},
        )
        workers.append(start_worker(server.env, tmp_path / "worker.log"))

        deadline = time.monotonic() + 180
        while not list(client.fine_tuning.jobs.checkpoints.list(job.id)):
            assert time.monotonic() < deadline, "no checkpoint was written"
            time.sleep(0.2)
        first_checkpoint = list(client.fine_tuning.jobs.checkpoints.list(job.id))[-1].step_number
        os.kill(workers[0].pid, signal.SIGKILL)
        workers[0].wait()
        time.sleep(1)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "running"  # nobody has noticed yet

        workers.append(start_worker(server.env, tmp_path / "worker.log"))
        deadline = time.monotonic() + 240
        while (status := client.fine_tuning.jobs.retrieve(job.id).status) not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, "the job did not finish after the restart"
            time.sleep(0.3)
        assert status == "succeeded", client.fine_tuning.jobs.retrieve(job.id).error

        messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=1000)]
        assert any("stopped responding" in m for m in messages)
        resumed = [m for m in messages if m.startswith("Resuming fine-tuning from checkpoint at step")]
        assert resumed and int(resumed[0].rsplit(" ", 1)[-1]) >= first_checkpoint
        steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=1000) if e.type == "metrics"]
        assert max(steps) == 200
        # Nothing was lost: the upload and the kept checkpoints are all still there.
        assert client.files.content(training_file).read() == data
        assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id)] == [200, 190, 180]
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                worker.wait(timeout=20)
        stop_server(server)

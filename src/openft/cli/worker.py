"""`openft worker`: a standalone worker process for the job queue (scale-out, or servers without one)."""

from __future__ import annotations

import logging
import signal

import typer


def worker(
    poll_seconds: float = typer.Option(1.0, help="How often to look for new jobs when idle."),
) -> None:
    """Claim and run fine-tuning jobs from the shared database until interrupted."""
    from openft.store.db import upgrade_database
    from openft.training.worker import Worker

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    upgrade_database()
    runner = Worker(poll_seconds=poll_seconds)
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    typer.echo(f"openft worker {runner.worker_id} waiting for jobs")
    try:
        runner.run_forever()
    except KeyboardInterrupt:
        runner.stop()

"""`openft worker`: a standalone worker process for the job queue (scale-out, or servers without one)."""

from __future__ import annotations

import logging
import os
import signal

import typer


def worker(
    poll_seconds: float = typer.Option(1.0, help="How often to look for new jobs when idle."),
    kind: list[str] = typer.Option(  # noqa: B006 - typer reads the default, never mutates it
        [], "--kind", help="Run only this kind of work (repeatable), e.g. evaluation or fine_tuning.train."
    ),
) -> None:
    """Lease and run queued work (fine-tuning, evaluations) from the shared database until interrupted."""
    from openft.jobs.allocator import allocator_setting
    from openft.jobs.worker import Worker
    from openft.store.db import upgrade_database

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    from openft.store.home import secure_home
    from openft.store.reaper import reap_safely

    secure_home()  # OPENFT_HOME 0700, files 0600; the training child inherits the umask
    upgrade_database()
    reap_safely()
    try:
        allocator_setting(os.environ)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="OPENFT_TASK_ALLOCATOR") from None
    try:
        runner = Worker(poll_seconds=poll_seconds, kinds=kind or None)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--kind") from None
    signal.signal(signal.SIGTERM, lambda *_: runner.stop())
    typer.echo(f"openft worker {runner.worker_id} waiting for jobs")
    try:
        runner.run_forever()
    except KeyboardInterrupt:
        runner.stop()

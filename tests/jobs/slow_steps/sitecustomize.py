"""Imported at start-up by every interpreter of a test's workers that puts this folder on PYTHONPATH (worker,
forkserver, job children): with OPENFT_TEST_MIN_STEP_SECONDS set, a training step reports no sooner than that
long after the previous one, so a job of the tiny model lasts long enough to be faulted mid-run on a fast
machine too (on a slow one, where steps take longer anyway, it adds nothing)."""

import os

_SECONDS = float(os.environ.get("OPENFT_TEST_MIN_STEP_SECONDS") or 0)

if _SECONDS > 0:
    import time

    from openft.training.job_runner import DatabaseReporter

    _on_metrics = DatabaseReporter.on_metrics

    def _slow_on_metrics(self, step, total_steps, metrics):
        previous = getattr(self, "_test_previous_step_at", None)
        if previous is not None:  # before the fenced write: a lease that expires meanwhile is found lost there
            time.sleep(max(0.0, _SECONDS - (time.monotonic() - previous)))
        self._test_previous_step_at = time.monotonic()
        return _on_metrics(self, step, total_steps, metrics)

    DatabaseReporter.on_metrics = _slow_on_metrics

"""Upload validation's time budget and abandonment (openft.data.validation_pool): a file that cannot be validated in
time is reported as such instead of holding a process for ever, and a worker whose caller gave up is stopped."""

from __future__ import annotations

import json
import threading
import time

import psutil
import pytest

from openft.data import validate_lines
from openft.data.validation_pool import ValidationAbandoned, ValidationPool

MB = 1024 * 1024


def chat_example(i: int) -> dict:
    return {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}


def validation_workers() -> list[psutil.Process]:
    return [p for p in psutil.Process().children() if "openft.data.validation_worker" in " ".join(p.cmdline())]


@pytest.fixture
def pool():
    pool = ValidationPool(max_workers=1, grace_s=0.5)
    yield pool
    pool.close()


@pytest.fixture
def huge_line_file(tmp_path):
    big = {"messages": [{"role": "user", "content": "a" * (10 * MB)}, {"role": "assistant", "content": "ok"}]}
    path = tmp_path / "huge.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in [big, *map(chat_example, range(10))]) + "\n")
    return path


def test_a_passed_deadline_stops_validation_after_the_line_being_checked():
    lines = [json.dumps(chat_example(i)).encode() for i in range(20)]
    report = validate_lines(lines, deadline=time.monotonic() - 1, openai_encodings=(), moderate=False)
    assert not report.ok
    assert report.error_counts == {"validation_timeout": 1}  # no too_few_examples: the rest was never read
    assert report.stats.n_lines == 1 and report.stats.n_valid == 1
    message = report.errors[0].message
    assert "after line 1" in message and "OPENFT_VALIDATION_TIMEOUT_SECONDS" in message


def test_a_worker_stuck_past_its_budget_is_killed_and_the_outcome_says_so(pool, tiny_model, huge_line_file):
    outcome = pool.validate(huge_line_file, tiny_model, budget=0.5)
    assert outcome.status == "error"
    assert outcome.report["error_counts"] == {"validation_timeout": 1}
    details = outcome.status_details
    assert "not fully checked" in details and "OPENFT_VALIDATION_TIMEOUT_SECONDS" in details
    assert validation_workers() == []


# Runs after the test above, whose worker was killed: this one is abandoned while a fresh worker starts.
def test_an_abandoned_validation_kills_its_worker(pool, tiny_model, huge_line_file):
    abandon = threading.Event()
    threading.Timer(1.0, abandon.set).start()
    started = time.monotonic()
    with pytest.raises(ValidationAbandoned):
        pool.validate(huge_line_file, tiny_model, budget=600, abandon=abandon)
    assert time.monotonic() - started < 3
    assert validation_workers() == []

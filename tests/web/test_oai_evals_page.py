"""The dashboard's Evals pages in a real browser: the run that `report_url` opens shows per-criterion pass rates
and each output item with the grader's reason. Needs playwright and Debian's chromium, like test_dashboard.py."""

from __future__ import annotations

import time

import pytest

from tests.web.test_dashboard import browser, log_in, page, shot, ui_url  # noqa: F401 - shared fixtures

STRING_CHECK = {"type": "string_check", "name": "exact", "input": "{{sample.output_text}}",
                "reference": "{{item.answer}}", "operation": "eq"}  # fmt: skip


@pytest.fixture(scope="module")
def key(live_server):
    return live_server.create_key("web-evals-org")


@pytest.fixture(scope="module")
def finished_run(live_server, key):
    client = live_server.client(key, timeout=60)
    evaluation = client.evals.create(name="capitals", testing_criteria=[STRING_CHECK],
                                     data_source_config={"type": "custom", "item_schema": {"type": "object"}})
    content = [{"item": {"answer": "Paris"}, "sample": {"output_text": "Paris"}},
               {"item": {"answer": "Lima"}, "sample": {"output_text": "Rome"}}]  # fmt: skip
    run = client.evals.runs.create(evaluation.id, data_source={"type": "jsonl", "source": {
        "type": "file_content", "content": content}})  # fmt: skip
    deadline = time.monotonic() + 120
    while run.status not in ("completed", "failed", "canceled") and time.monotonic() < deadline:
        time.sleep(0.5)
        run = client.evals.runs.retrieve(run.id, eval_id=evaluation.id)
    assert run.status == "completed"
    return run


def test_the_report_url_opens_the_run_with_pass_rates_and_reasons(page, ui_url, key, finished_run):  # noqa: F811
    log_in(page, ui_url, key, route="/evals")
    page.wait_for_selector("#oai-evals-table")
    page.goto(finished_run.report_url)
    page.wait_for_selector("#oai-criteria-table")
    assert "50%" in page.inner_text("#oai-criteria-table")
    page.wait_for_selector("#oai-items-table")
    assert "'Rome' eq 'Lima'" in page.inner_text("#oai-items-table")  # the grader's reason for the failure
    page.select_option("#oai-items-filter", "fail")
    page.wait_for_function("document.querySelectorAll('#oai-items-table tbody tr').length === 1")
    shot(page, "oai-eval-run")

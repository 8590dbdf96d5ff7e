"""The dashboard's Distillations pages in a real browser: a distillation made through the API (the live server's
own tiny model as the teacher, a grader filter dropping two lines) is listed with its counts; its page shows the
teacher's tally, each dropped line with the filter's reason, and the training file, one click from a fine-tuning
job. Needs playwright and Debian's chromium, like test_dashboard.py."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.web.test_dashboard import browser, log_in, page, shot, ui_url  # noqa: F401 - shared fixtures

KEEP = {"type": "string_check", "name": "keep", "input": "{{item.keep}}", "reference": "yes", "operation": "eq"}


@pytest.fixture(scope="module")
def key(live_server):
    return live_server.create_key("web-distill-org")


@pytest.fixture(scope="module")
def finished(live_server, key):
    """12 prompts, lines 3 and 7 marked keep=no: 10 kept (a training file needs 10), 2 dropped by the grader."""
    lines = [{"messages": [{"role": "user", "content": f"Question {i}"}], "keep": "no" if i in (3, 7) else "yes"}
             for i in range(1, 13)]  # fmt: skip
    with httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as api:
        content = "".join(json.dumps(x) + "\n" for x in lines).encode()
        uploaded = api.post("/files", files={"file": ("prompts.jsonl", content)}, data={"purpose": "user_data"})
        assert uploaded.status_code == 200, uploaded.text
        created = api.post("/distillations", json={
            "input_file": uploaded.json()["id"], "teacher": {"model": "tiny-llama"}, "max_completion_tokens": 4,
            "temperature": 1, "seed": 7, "filter": {"drop_truncated": False, "grader": KEEP}})
        assert created.status_code == 201, created.text
        deadline = time.monotonic() + 120
        while (job := api.get(f"/distillations/{created.json()['id']}").json())["status"] in ("queued", "running"):
            assert time.monotonic() < deadline, job
            time.sleep(0.3)
    assert job["status"] == "succeeded", job["error"]
    return job


def test_a_distillation_is_listed_with_its_counts_and_its_report(page, ui_url, key, finished):  # noqa: F811
    log_in(page, ui_url, key, route="/distillations")
    row = page.wait_for_selector(f"#distillations-table tr[data-distillation-id='{finished['id']}']")
    cells = [c.inner_text() for c in row.query_selector_all("td")]
    assert cells[1:6] == ["succeeded", "tiny-llama", "10", "2", "0"]  # status, teacher, kept, dropped, failed
    assert cells[6] == f"{finished['usage']['total_tokens']:,}" and cells[7] == "not priced"  # a served teacher

    row.query_selector("a").click()
    page.wait_for_selector("#distill-report-table")
    assert len(page.query_selector_all("#distill-report-table tr[data-outcome='kept']")) == 10
    dropped = page.query_selector_all("#distill-report-table tr[data-outcome='dropped']")
    assert [r.get_attribute("data-line") for r in dropped] == ["3", "7"]
    assert "scored 0 < pass_threshold 1" in dropped[0].inner_text()  # the filter's reason, as the API gives it
    assert "answered" in page.inner_text("#distill-tally").lower()
    assert page.inner_text("#distill-output-file") == finished["output_file"]
    shot(page, "distillation")

    page.click("#distill-fine-tune")  # the jobs page opens with the distilled file chosen for training
    page.wait_for_selector("#job-form")
    assert page.eval_on_selector("#job-training-file", "s => s.value") == finished["output_file"]

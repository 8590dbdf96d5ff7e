"""The dashboard in a real headless Chromium against a live `openft serve` training the tiny model.

Each test is a user's visit: log in, upload files and read their validation report, start a job and watch its
chart grow, compare two models in the playground, read an evaluation report, delete a model. Screenshots go to
test-artifacts/web/. Needs `pip install playwright` and Debian's `chromium` (never `playwright install`).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest

from tests.evals.fakes import HELD_OUT, SYSTEM, TRAIN

sync_playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed").sync_playwright
CHROMIUM = os.environ.get("OPENFT_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)", allow_module_level=True)

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "web"
TIMEOUT_MS = 120_000  # the first upload starts the validation worker, slow on a loaded machine


def chat_line(question: str, answer: str) -> str:
    return json.dumps({"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]})


GOOD_FILE = "\n".join(chat_line(f"Code for item {i}?", f"ITEM-{i:03d}") for i in range(12)) + "\n"
BAD_FILE = (
    "\n".join(
        [
            chat_line("Hi", "Hello"),
            chat_line("Bye", "Goodbye"),
            '{"messages": [{"role": "user", "content": "unclosed"',  # line 3: not JSON
            chat_line("Why", "Because"),
            json.dumps(
                {"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "ok"}]}
            ),  # 5
            json.dumps({"messages": [{"role": "user", "content": "no answer"}]}),  # line 6
        ]
    )
    + "\n"
)


@pytest.fixture(scope="module")
def key(live_server):
    return live_server.create_key("web-org")


@pytest.fixture(scope="module")
def api(live_server, key):
    with httpx.Client(base_url=live_server.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def ui_url(live_server):
    return live_server.base_url.removesuffix("/v1") + "/ui/"


@pytest.fixture(scope="module")
def browser():
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    script_errors: list[str] = []
    page.on("pageerror", lambda error: script_errors.append(str(error)))
    yield page
    context.close()
    assert not script_errors, f"JavaScript errors on the page: {script_errors}"


def log_in(page, ui_url: str, key: str, route: str = "/files") -> None:
    page.goto(f"{ui_url}#/login?next={route}")
    page.fill("#api-key", key)
    page.click("#login-submit")
    page.wait_for_selector("#nav:not([hidden])")


def upload(page, name: str, content: str) -> None:
    page.goto(page.url.split("#")[0] + "#/files")
    page.set_input_files("#upload-file", {"name": name, "mimeType": "application/jsonl", "buffer": content.encode()})
    page.click("#upload-submit")


def shot(page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def test_log_in_with_a_key_and_out_again(page, ui_url, key):
    page.goto(ui_url.removesuffix("/ui/") + "/")  # the server root sends people to the dashboard
    page.wait_for_selector("#login-form")
    assert "#/login" in page.url

    page.fill("#api-key", "sk-openft-not-a-real-key")
    page.click("#login-submit")
    error = page.locator("#login-message .error-message")
    error.wait_for()
    assert error.inner_text().startswith("Incorrect API key provided")  # the API's own words
    shot(page, "login-refused")

    page.fill("#api-key", key)
    page.click("#login-submit")
    page.wait_for_selector("#files-table, #upload-form")
    assert page.locator("#nav").is_visible() and key[-4:] in page.inner_text("#key-hint")

    page.click("#logout")
    page.wait_for_selector("#login-form")
    page.goto(ui_url + "#/jobs")
    page.wait_for_selector("#login-form")  # logged out: pages ask for the key again


def test_a_bad_upload_shows_every_error_with_its_line(page, ui_url, key):
    log_in(page, ui_url, key)
    upload(page, "notes.txt", GOOD_FILE)
    refused = page.locator("#upload-message .error-message")
    refused.wait_for()
    assert "Upload a .jsonl file" in refused.inner_text()

    upload(page, "broken.jsonl", BAD_FILE)
    page.wait_for_selector("#validation-errors")
    rows = page.locator("#validation-errors tbody tr")
    found = {
        (rows.nth(i).locator("td").nth(0).inner_text(), rows.nth(i).locator("td").nth(1).inner_text())
        for i in range(rows.count())
    }
    assert {("3", "invalid_json"), ("5", "unrecognized_role"), ("6", "example_missing_assistant_message")} <= found
    assert ("whole file", "too_few_examples") in found
    assert "error" in page.inner_text("#validation-verdict")
    shot(page, "validation-errors")

    page.click("text=← Files")
    page.wait_for_selector("#files-table")
    assert page.locator("#files-table tr", has_text="broken.jsonl").locator(".badge").inner_text() == "error"


def test_start_a_job_and_watch_its_chart_grow(page, ui_url, key):
    log_in(page, ui_url, key)
    upload(page, "codes.jsonl", GOOD_FILE)
    page.wait_for_selector("#validation-verdict.ok")
    assert "12 examples" in page.inner_text("#validation-verdict")
    file_id = page.url.rsplit("/", 1)[-1]
    page.click("text=Fine-tune on this file")

    page.wait_for_selector("#job-form")
    page.select_option("#job-model", "tiny-llama")
    assert page.input_value("#job-training-file") == file_id
    page.select_option("#job-validation-file", file_id)
    # Long enough (240 steps, 20 evaluations) for the page's 2 s polls to see it run: 72 steps once ran in
    # under 4 s, between two polls.
    page.fill("#job-epochs", "20")
    page.fill("#job-batch-size", "1")
    page.fill("#job-suffix", "codes")
    page.click("#job-submit")
    page.wait_for_url("**/#/jobs/ftjob-*")

    points_seen: list[int] = []
    deadline = time.monotonic() + 400
    while time.monotonic() < deadline:
        points_seen.append(int(page.get_attribute("#loss-chart", "data-points") or 0))
        if page.locator("#job-status [data-status]").get_attribute("data-status") in ("succeeded", "failed"):
            break
        if points_seen[-1] > 0 and max(points_seen[:-1], default=0) == 0:
            shot(page, "job-running")  # the first points on the chart
        page.wait_for_timeout(500)
    status = page.locator("#job-status [data-status]").get_attribute("data-status")
    assert status == "succeeded", page.inner_text("main")
    growth = sorted(set(points_seen))
    assert len([n for n in growth if n > 0]) >= 2, f"the chart never grew while the page watched: {points_seen}"

    final_points = int(page.get_attribute("#loss-chart", "data-points"))
    train = page.locator('#loss-chart [data-series="training loss"]')
    assert int(train.get_attribute("data-points")) == 240  # 12 examples x 20 epochs, batch size 1
    assert int(page.get_attribute('#loss-chart [data-series="validation loss"]', "data-points")) == 20  # per epoch
    assert final_points == max(points_seen + [final_points])
    assert int(page.get_attribute("#accuracy-chart", "data-points")) > 0
    assert page.locator("#checkpoints-table tbody tr").count() == 3  # one per epoch, the last 3 kept
    assert page.locator("#events-table tbody tr").first.inner_text().endswith("The job has successfully completed")
    assert page.locator("#job-cancel").is_disabled() and page.locator("#job-resume").is_disabled()
    assert "ft:tiny-llama:web-org:codes:" in page.inner_text("#job-facts")
    shot(page, "job-succeeded")

    page.click("#nav a[data-section=jobs]")
    page.wait_for_selector("#jobs-table")
    assert page.locator("#jobs-table tr", has_text="ft:tiny-llama:web-org:codes:").locator(".badge").inner_text() == (
        "succeeded"
    )


def fine_tuned_models(api) -> list[str]:
    return [m["id"] for m in api.get("/models").json()["data"] if m["id"].startswith("ft:")]


@pytest.fixture(scope="module")
def fine_tuned_model(api) -> str:
    """The model the job test trained; trained here through the API if that test did not run."""
    if not fine_tuned_models(api):
        upload = api.post("/files", files={"file": ("codes.jsonl", GOOD_FILE.encode())}, data={"purpose": "fine-tune"})
        body = {
            "model": "tiny-llama",
            "training_file": upload.json()["id"],
            "suffix": "codes",
            "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 1}}},
        }
        job = api.post("/fine_tuning/jobs", json=body).json()
        deadline = time.monotonic() + 120
        while api.get(f"/fine_tuning/jobs/{job['id']}").json()["status"] not in ("succeeded", "failed", "cancelled"):
            assert time.monotonic() < deadline, "the fallback fine-tuning job did not finish"
            time.sleep(0.5)
    return fine_tuned_models(api)[0]


def test_playground_answers_side_by_side(page, ui_url, key, fine_tuned_model):
    log_in(page, ui_url, key, f"/playground?model={fine_tuned_model}")
    page.wait_for_selector("#playground-form")
    assert page.input_value("#left-model") == "tiny-llama"  # the fine-tuned model's base
    assert page.input_value("#right-model") == fine_tuned_model
    page.fill("#user-prompt", "Code for item 3?")
    page.fill("#max-tokens", "8")
    page.click("#send")
    for side in ("#left-answer", "#right-answer"):
        page.wait_for_selector(f"{side} .answer-meta, {side} .error-box", timeout=180_000)
    shot(page, "playground")
    for side in ("#left-answer", "#right-answer"):
        error = page.locator(f"{side} .error-message")
        if error.count():  # the chat endpoint's own words, shown as they came
            message = error.inner_text()
            assert message and "undefined" not in message
            pytest.fail(f"/v1/chat/completions answered with an error: {message}")
        assert page.locator(f"{side} .answer-text").count() == 1
        assert re.search(r"completion tokens [1-9]", page.inner_text(f"{side} .answer-meta"))


@pytest.fixture(scope="module")
def evaluation(api) -> dict:
    def upload(name: str, pairs) -> str:
        lines = [
            json.dumps({"messages": [SYSTEM, {"role": "user", "content": t}, {"role": "assistant", "content": a}]})
            for t, a in pairs
        ]
        uploaded = api.post("/files", files={"file": (name, "\n".join(lines).encode())}, data={"purpose": "evals"})
        return uploaded.json()["id"]

    body = {
        "eval_file": upload("held_out.jsonl", HELD_OUT),
        "training_file": upload("train.jsonl", TRAIN),
        "model": "tiny-llama",
        "k": 2,
        "max_tokens": 4,
    }
    created = api.post("/evaluations", json=body)
    assert created.status_code == 200, created.text
    return created.json()


def test_an_evaluation_report_with_its_plots(page, ui_url, key, evaluation):
    log_in(page, ui_url, key, "/evaluations")
    row = page.locator(f'#evaluations-table tr[data-evaluation-id="{evaluation["id"]}"]')
    row.wait_for()
    row.locator("a").click()
    page.wait_for_selector('#evaluation-status [data-status="succeeded"]', timeout=120_000)
    assert page.locator("#evaluation-summary tbody tr").count() == 3  # zero-shot, few-shot, retrieval few-shot
    quality = page.locator("#evaluation-summary tbody tr").first.locator("td").nth(3).inner_text()
    assert re.fullmatch(r"\d\.\d{3} \[\d\.\d{3}, \d\.\d{3}\]", quality)  # mean [95% interval]
    report = page.frame_locator("#report-frame")
    report.locator("svg.plot").first.wait_for()
    assert report.locator("svg.plot").count() == 3
    assert page.get_attribute("#report-open", "href").startswith("blob:")
    shot(page, "evaluation-report")


def test_pause_resume_and_cancel_buttons(page, ui_url, key, api):
    upload = api.post("/files", files={"file": ("long.jsonl", GOOD_FILE.encode())}, data={"purpose": "fine-tune"})
    body = {
        "model": "tiny-llama",
        "training_file": upload.json()["id"],
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 20, "batch_size": 1}}},
    }
    job = api.post("/fine_tuning/jobs", json=body).json()
    log_in(page, ui_url, key, f"/jobs/{job['id']}")
    page.wait_for_selector('#loss-chart:not([data-points="0"])', timeout=180_000)  # training has started

    page.click("#job-pause")
    page.wait_for_selector('#job-status [data-status="paused"]', timeout=180_000)
    assert page.locator("#checkpoints-table tbody tr").count() >= 1  # pausing saved a checkpoint
    assert page.locator("#job-resume").is_enabled() and page.locator("#job-pause").is_disabled()
    page.click("#job-resume")
    page.wait_for_selector('#job-status [data-status="queued"], #job-status [data-status="running"]')
    page.click("#job-cancel")
    page.wait_for_selector('#job-status [data-status="cancelled"]')
    page.locator("#events-table", has_text="Fine-tuning job cancelled").wait_for()
    assert page.locator("#job-cancel").is_disabled()
    shot(page, "job-cancelled")


def test_delete_a_fine_tuned_model(page, ui_url, key, fine_tuned_model):
    log_in(page, ui_url, key, "/models")
    row = page.locator(f'#models-table tr[data-model-id="{fine_tuned_model}"]')
    row.wait_for()
    assert page.locator('#models-table tr[data-model-id="tiny-llama"] button').count() == 0  # base models stay
    button = row.locator("button")
    button.click()
    assert button.inner_text() == "Really delete?"  # nothing is deleted on the first click
    button.click()
    page.locator("#models-message", has_text=f"Deleted {fine_tuned_model}").wait_for()
    assert page.locator(f'#models-table tr[data-model-id="{fine_tuned_model}"]').count() == 0

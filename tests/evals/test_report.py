import json
import re
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from openft.evals.advisor import AdviceSettings, advise
from openft.evals.report import build_report, render, to_html, to_markdown
from openft.evals.runner import EvalSettings, run_evaluation
from openft.pricing import inference_cost
from tests.evals.fakes import FakeChat, fake_embed, held_out_examples, train_examples

FT = "ft:base:acme::abc12345"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CPU_HOUR = 0.0504  # openft's default price of one vCPU-hour


@pytest.fixture
def results(openft_home):  # openft_home: no user prices.toml can change the figures
    settings = EvalSettings(
        base_model="base",
        strategies=["zero-shot", "few-shot", "retrieval-few-shot", "fine-tuned"],
        fine_tuned_models=[FT],
        k=3,
    )
    out = run_evaluation(settings, held_out_examples(), train_examples(), FakeChat(), embed=fake_embed)
    out["training"] = {"trained_tokens": 300_000, "seconds": 3600.0, "job_id": "ftjob-abc"}
    return out


def strategy(results, name):
    return next(s for s in results["strategies"] if s["name"] == name)


def cost(advice, name):
    return next(c for c in advice["costs"] if c["strategy"] == name)


def test_hosted_costs_price_the_measured_tokens_and_local_costs_the_measured_latency(results):
    advice = advise(results, AdviceSettings(requests_per_day=1000))
    few = strategy(results, "few-shot")
    expected = inference_cost(
        "gpt-4o-mini", Decimal(str(few["prompt_tokens"]["mean"])), Decimal(str(few["completion_tokens"]["mean"]))
    )
    line = cost(advice, "few-shot")["hosted"]
    assert line["per_request"] == pytest.approx(float(expected))
    assert line["per_1k_requests"] == pytest.approx(float(expected) * 1000)
    assert line["monthly"] == pytest.approx(float(expected) * 1000 * 30)
    local = cost(advice, "few-shot")["local"]
    assert local["per_request"] == pytest.approx(few["latency_s"]["mean"] * CPU_HOUR / 3600)
    assert cost(advice, FT)["hosted_model"] == "ft:gpt-4o-mini-2024-07-18"
    assert cost(advice, "zero-shot")["hosted_model"] == "gpt-4o-mini"


def test_training_cost_uses_the_jobs_trained_tokens_and_measured_time(results):
    # The seed figure: 100K tokens x 3 epochs (300K trained tokens) on gpt-3.5-turbo = $2.40.
    advice = advise(results, AdviceSettings(hosted_training_model="gpt-3.5-turbo"))
    assert advice["training"]["hosted_cost"] == pytest.approx(2.40)
    assert advice["training"]["local_cost"] == pytest.approx(CPU_HOUR)  # one hour on one vCPU
    assert cost(advice, FT)["hosted"]["one_time"] == pytest.approx(2.40)
    assert cost(advice, "few-shot")["hosted"]["one_time"] == 0
    assert cost(advice, FT)["local"]["over_horizon"] == pytest.approx(
        CPU_HOUR + cost(advice, FT)["local"]["monthly"] * 12
    )


def test_break_even_is_training_cost_over_the_monthly_saving(results):
    advice = advise(results, AdviceSettings(requests_per_day=1000, hosted_training_model="gpt-4o-mini"))
    pair = next(b for b in advice["recommendations"]["hosted"]["break_even"] if b["baseline"] == "few-shot")
    saving = cost(advice, "few-shot")["hosted"]["per_request"] - cost(advice, FT)["hosted"]["per_request"]
    assert pair["saving_per_request"] == pytest.approx(saving)
    assert pair["requests_per_month"] == pytest.approx(300_000 * 3 / 1e6 / (saving * 12))


def test_recommendation_fine_tunes_at_high_traffic_and_prompts_at_low_traffic(results, tmp_path):
    # Few-shot prompting matches the fine-tuned model's quality within its CI here, so the costs decide.
    high = advise(results, AdviceSettings(requests_per_day=1_000_000))["recommendations"]["hosted"]
    assert high["choice"] == FT and high["headline"].startswith("Fine-tune")
    low = advise(results, AdviceSettings(requests_per_day=1))["recommendations"]["hosted"]
    assert low["choice"] in ("few-shot", "retrieval-few-shot") and "Prompting is enough" in low["headline"]
    assert any("repays its training" in r for r in low["reasons"])


def test_markdown_report_ranks_strategies_and_lists_costs(results):
    report = build_report(results, advise(results), {"id": "eval-123"})
    md = to_markdown(report)
    assert md.startswith("# Evaluation eval-123")
    table = [line for line in md.splitlines() if line.startswith("| 1 |") or line.startswith("| 2 |")]
    assert FT in table[0] or "retrieval-few-shot" in table[0]
    assert "## Recommendation (local)" in md and "## Break-even" in md and "hosted over horizon" in md
    body, media = render(report, "json")
    assert media == "application/json" and json.loads(body)["results"]["ranking"] == results["ranking"]


def test_html_report_is_self_contained_with_three_plots(results):
    html = to_html(build_report(results, advise(results), {"id": "eval-123"}))
    assert html.count('<svg class="plot"') == 3
    for plot in ("quality-vs-cost", "tokens", "latency"):
        assert f'data-plot="{plot}"' in html
    # nothing is fetched: no scripts, stylesheets, images or fonts from elsewhere
    assert "<script" not in html and not re.search(r"(src|href)=", html)
    assert html.count('class="point"') == 2 * 4  # every strategy priced locally and hosted


@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's `chromium` (apt-get install chromium)")
def test_html_report_renders_its_plots_in_headless_chromium(results, tmp_path):
    from PIL import Image

    ARTIFACTS.mkdir(exist_ok=True)
    page = ARTIFACTS / "eval-report.html"
    page.write_text(to_html(build_report(results, advise(results), {"id": "eval-chromium"})), encoding="utf-8")
    screenshot = ARTIFACTS / "eval-report.png"
    screenshot.unlink(missing_ok=True)
    flags = [
        "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}", "--hide-scrollbars", "--window-size=1300,2200",
    ]  # fmt: skip
    subprocess.run([*flags, f"--screenshot={screenshot}", page.as_uri()], check=True, capture_output=True, timeout=90)
    dom = subprocess.run([*flags, "--dump-dom", page.as_uri()], check=True, capture_output=True, text=True, timeout=90)

    assert dom.stdout.count('<svg class="plot"') == 3
    assert dom.stdout.count('class="bar"') == 2 * 2 * 4  # tokens and latency: two series x four strategies
    image = Image.open(screenshot).convert("RGB")
    colors = image.getcolors(maxcolors=1 << 20)
    plot_blue = sum(count for count, rgb in colors if rgb == (0x42, 0x69, 0xD0))
    plot_yellow = sum(count for count, rgb in colors if rgb == (0xEF, 0xB1, 0x18))
    assert plot_blue > 2000 and plot_yellow > 2000, "the bars and points were not painted"


def test_training_cost_estimates_from_the_validation_reports_openai_token_counts(openft_home):
    from openft.pricing.estimates import training_cost_estimates

    report = {"openai_tokens": {"cl100k_base": {"total_tokens": 100_000}, "o200k_base": {"total_tokens": 90_000}}}
    estimates = {e["model"]: e for e in training_cost_estimates(report, n_epochs=3)}
    assert estimates["gpt-3.5-turbo"]["cost_usd"] == pytest.approx(2.40)  # the seed figure
    assert estimates["gpt-4o-mini"]["billable_tokens_per_epoch"] == 90_000  # counted with o200k_base
    assert estimates["gpt-4o-mini"]["cost_usd"] == pytest.approx(90_000 * 3 * 3 / 1e6)
    assert training_cost_estimates({"openai_tokens": None}, 3) == []

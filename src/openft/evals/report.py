"""The evaluation report as JSON, Markdown and a self-contained HTML page (inline SVG plots, no network)."""

from __future__ import annotations

from html import escape
from string import Template
from typing import Any

from openft.evals import plots
from openft.evals.forgetting_report import html_sections, markdown_sections
from openft.evals.paired import best_vs_others
from openft.evals.report_template import HTML_TEMPLATE

FORMATS = ("json", "md", "html")


def build_report(results: dict[str, Any], advice: dict[str, Any] | None, about: dict[str, Any] | None = None) -> dict:
    """The JSON report: what was run (`about`), the measurements, and the advisor's costs and recommendation."""
    return {"object": "evaluation.report", "evaluation": about or {}, "results": results, "advice": advice}


def _quality(s: dict[str, Any], metric: str) -> str:
    q = s["quality"].get(metric)
    return "n/a" if q is None else f"{q['mean']:.3f} [{q['low']:.3f}, {q['high']:.3f}]"


def _num(d: dict[str, float] | None, key: str = "mean", fmt: str = "{:.1f}") -> str:
    return "n/a" if d is None else fmt.format(d[key])


def _usd(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"${value:,.2f}" if abs(value) >= 1 else f"${value:.4f}"


def _costs_by_strategy(advice: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    return {c["strategy"]: c for c in (advice or {}).get("costs", [])}


def strategy_rows(report: dict[str, Any]) -> list[list[str]]:
    results, advice = report["results"], report["advice"]
    metrics, costs = results["metrics"], _costs_by_strategy(advice)
    rows = []
    for position, name in enumerate(results["ranking"], start=1):
        s = next(x for x in results["strategies"] if x["name"] == name)
        cost = costs.get(name, {})
        rows.append(
            [
                str(position),
                name,
                s["model"],
                *(_quality(s, m) for m in metrics),
                _num(s["prompt_tokens"]),
                _num(s["completion_tokens"]),
                _num(s["latency_s"], "p50", "{:.3f}"),
                _num(s["latency_s"], "p95", "{:.3f}"),
                _usd((cost.get("local") or {}).get("per_1k_requests")),
                _usd((cost.get("hosted") or {}).get("per_1k_requests")),
                str(s["n_errors"]),
            ]
        )
    return rows


def strategy_header(report: dict[str, Any]) -> list[str]:
    metrics = report["results"]["metrics"]
    return [
        "rank",
        "strategy",
        "model",
        *(f"{m} (95% CI)" for m in metrics),
        "prompt tokens",
        "completion tokens",
        "p50 latency s",
        "p95 latency s",
        "local $/1K req",
        "hosted $/1K req",
        "errors",
    ]


def cost_rows(advice: dict[str, Any]) -> list[list[str]]:
    rows = []
    for c in advice["costs"]:
        local, hosted = c["local"], c["hosted"] or {}
        rows.append(
            [
                c["strategy"],
                _usd(local["monthly"]),
                _usd(local["one_time"]),
                _usd(local["over_horizon"]),
                c["hosted_model"] or "not priced",
                _usd(hosted.get("monthly")),
                _usd(hosted.get("one_time")),
                _usd(hosted.get("over_horizon")),
            ]
        )
    return rows


COST_HEADER = [
    "strategy",
    "local monthly",
    "local one-time",
    "local over horizon",
    "hosted equivalent",
    "hosted monthly",
    "hosted one-time",
    "hosted over horizon",
]


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *map(line, rows)])


def _traffic(advice: dict[str, Any]) -> str:
    i = advice["inputs"]
    return (
        f"{i['requests_per_day']:,g} requests/day ({i['requests_per_month']:,.0f}/month) over {i['horizon_months']:g} "
        f"months; local: {i['n_devices']} {i['device']} device(s), concurrency {i['concurrency']:g}"
    )


def to_markdown(report: dict[str, Any]) -> str:
    results, advice, about = report["results"], report["advice"], report["evaluation"]
    out = [f"# Evaluation {about.get('id', '')}".rstrip(), ""]
    out.append(
        f"{results['n_examples']} held-out examples, base model `{results['base_model']}`, k = {results['k']} shots, "
        f"primary metric `{results['primary_metric']}`."
    )
    if advice:
        for deployment, rec in advice["recommendations"].items():
            out += ["", f"## Recommendation ({deployment})", "", f"**{rec['headline']}**", ""]
            out += [f"- {reason}" for reason in rec["reasons"]]
    out += ["", "## Strategies (best first)", "", _md_table(strategy_header(report), strategy_rows(report))]
    if advice:
        t = advice["training"]
        out += ["", "## Costs", "", f"Traffic: {_traffic(advice)}.", ""]
        if t["trained_tokens"] is not None:
            out.append(
                f"Training: {t['trained_tokens']:,} trained tokens in {t['seconds']:.0f} s; hosted "
                f"({advice['inputs']['hosted_training_model']}) {_usd(t['hosted_cost'])}, "
                f"local {_usd(t['local_cost'])}."
            )
            out.append("")
        out.append(_md_table(COST_HEADER, cost_rows(advice)))
        pairs = [b for rec in advice["recommendations"].values() for b in rec["break_even"]]
        if pairs:
            out += ["", "## Break-even", ""]
            for deployment, rec in advice["recommendations"].items():
                for b in rec["break_even"]:
                    volume = b["requests_per_month"]
                    when = "never (not cheaper per request)" if volume is None else f"{volume:,.0f} requests/month"
                    out.append(f"- {deployment}: {b['fine_tuned']} vs {b['baseline']}: {when}")
    out += [line for note in rag_and_tool_notes(results) for line in ("", note)]
    out += markdown_sections(results, advice)  # rivals and the forgetting check (evals.forgetting_report)
    out += _markdown_comparisons(results)
    out += ["", "## Sample predictions", ""]
    for sample in results["samples"][:5]:
        out.append(f"- **input:** {sample['input'][:200]!r} — **reference:** {sample['reference'][:200]!r}")
        for name, pred in sample["predictions"].items():
            out.append(f"  - {name}: {pred['text'][:200]!r}")
    return "\n".join(out) + "\n"


def _mean(s: dict[str, Any] | None, key: str) -> float | None:
    values = (s or {}).get(key)
    return values["mean"] if values else None


def rag_and_tool_notes(results: dict[str, Any]) -> list[str]:
    """Sentences on what RAG retrieved from and what it cost in prompt tokens and latency, and on tool calling."""
    notes = []
    by_name = {s["name"]: s for s in results["strategies"]}
    rag = results.get("rag")
    if rag:
        parts = []
        for s in results["strategies"]:
            if s["kind"] not in ("rag", "rag-fine-tuned"):
                continue
            plain = by_name.get("zero-shot" if s["kind"] == "rag" else s["model"])
            tokens, plain_tokens = _mean(s, "prompt_tokens"), _mean(plain, "prompt_tokens")
            extra = f"+{tokens - plain_tokens:.0f} prompt tokens per request over {plain['name']}" if (
                tokens is not None and plain_tokens is not None) else "prompt tokens as in the table"
            retrieval = (s.get("retrieval_s") or {}).get("p50")
            took = "" if retrieval is None else f", retrieval p50 {retrieval * 1000:.0f} ms (in its latency)"
            parts.append(f"{s['name']}: {extra}{took}")
        notes.append(
            f"RAG: the top {rag['k']} of {rag['n_passages']} passages from {rag['n_documents']} document(s) "
            f"per question (paragraphs packed to at most {rag['max_words']} words, long ones cut with "
            f"{rag['overlap_words']} words of overlap; all-MiniLM-L6-v2 cosine). " + "; ".join(parts) + "."
        )
    if results.get("n_tool_examples"):
        notes.append(
            f"Function calling: {results['n_tool_examples']} of {results['n_examples']} held-out examples carry tool "
            "definitions; function-calling (base model), the fine-tuned models and external endpoints receive them, "
            "and tool-call metrics compare the calls made with the expected ones (name, arguments as JSON)."
        )
    return notes


def comparison_verdict(c: dict[str, Any]) -> str:
    """One sentence: is the better-scoring strategy of the pair significantly better (paired test)?"""
    a, b = c["a"], c["b"]
    test = "paired bootstrap" if c["method"] == "paired-bootstrap" else c["method"].replace("mcnemar-", "McNemar, ")
    if c["mean_difference"] == 0:
        word = f"{a} and {b} score the same"
    elif c["significant"]:
        better, worse = (a, b) if c["mean_difference"] > 0 else (b, a)
        word = f"{better} is significantly better than {worse}"
    else:
        word = f"{a} and {b} differ by {c['mean_difference']:+.3f}, not significantly"
    return (
        f"{word} ({test}, p = {c['p_value']:.3g}, {c['n']} paired items; difference {c['mean_difference']:+.3f} "
        f"[{c['low']:+.3f}, {c['high']:+.3f}]). {a} alone right on {c['n_a_only']} items, {b} alone on "
        f"{c['n_b_only']} (right: {c['right_rule']})."
    )


def _flip_rows(c: dict[str, Any], key: str) -> list[list[str]]:
    return [
        [str(f["item"]), f["input"][:300], f["reference"][:300], f[c["a"]]["text"][:300], f[c["b"]]["text"][:300]]
        for f in c[key]
    ]


def _markdown_comparisons(results: dict[str, Any]) -> list[str]:
    comparisons = best_vs_others(results)
    if not comparisons:
        return []
    out = ["", "## Paired comparisons (same items)", ""]
    for c in comparisons:
        out += [f"### {c['a']} vs {c['b']}", "", comparison_verdict(c)]
        for key, right, wrong in (("a_only", c["a"], c["b"]), ("b_only", c["b"], c["a"])):
            if c[key]:
                header = ["item", "input", "reference", c["a"], c["b"]]
                out += ["", f"Items {right} gets right and {wrong} misses:", "", _md_table(header, _flip_rows(c, key))]
        out.append("")
    return out


def _html_comparisons(results: dict[str, Any]) -> str:
    comparisons = best_vs_others(results)
    if not comparisons:
        return ""
    parts = ["<h2>Paired comparisons (same items)</h2>"]
    for c in comparisons:
        parts.append(f'<section class="comparison"><h3>{escape(c["a"])} vs {escape(c["b"])}</h3>')
        parts.append(f"<p>{escape(comparison_verdict(c))}</p>")
        for key, right, wrong in (("a_only", c["a"], c["b"]), ("b_only", c["b"], c["a"])):
            if c[key]:
                header = ["item", "input", "reference", c["a"], c["b"]]
                parts.append(f"<p>Items {escape(right)} gets right and {escape(wrong)} misses:</p>")
                parts.append(_html_table(header, _flip_rows(c, key), "flips"))
        parts.append("</section>")
    return "".join(parts)


def _html_table(header: list[str], rows: list[list[str]], css_class: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def report_plots(report: dict[str, Any]) -> list[str]:
    """Quality vs cost per 1K requests, tokens per request, and latency, as inline SVG."""
    results, advice = report["results"], report["advice"]
    metric = results["primary_metric"]
    measured = [s for s in results["strategies"] if s["latency_s"] is not None]
    names = [s["name"] for s in measured]
    costs = _costs_by_strategy(advice)
    points = []
    for s in measured:
        q = s["quality"].get(metric)
        for deployment in ("local", "hosted"):
            line = (costs.get(s["name"]) or {}).get(deployment)
            if q is not None and line is not None:
                points.append(
                    {
                        "label": s["name"],
                        "series": deployment,
                        "x": line["per_1k_requests"],
                        "y": q["mean"],
                        "low": q["low"],
                        "high": q["high"],
                    }
                )
    charts = []
    if points:
        charts.append(
            plots.scatter("quality-vs-cost", f"Quality ({metric}) vs cost", "USD per 1K requests", metric, points)
        )
    charts.append(
        plots.bar_chart(
            "tokens",
            "Tokens per request (mean)",
            "tokens",
            names,
            {
                "prompt": [s["prompt_tokens"]["mean"] for s in measured],
                "completion": [s["completion_tokens"]["mean"] for s in measured],
            },
        )
    )
    charts.append(
        plots.bar_chart(
            "latency",
            "Latency per request",
            "seconds",
            names,
            {"p50": [s["latency_s"]["p50"] for s in measured], "p95": [s["latency_s"]["p95"] for s in measured]},
        )
    )
    return charts


def to_html(report: dict[str, Any]) -> str:
    results, advice, about = report["results"], report["advice"], report["evaluation"]
    recommendation = ""
    costs = ""
    if advice:
        for deployment, rec in advice["recommendations"].items():
            reasons = "".join(f"<li>{escape(r)}</li>" for r in rec["reasons"])
            recommendation += (
                f'<section class="recommendation"><h2>Recommendation ({escape(deployment)})</h2>'
                f'<p class="headline">{escape(rec["headline"])}</p><ul>{reasons}</ul></section>'
            )
        costs = f"<h2>Costs</h2><p>Traffic: {escape(_traffic(advice))}.</p>" + _html_table(
            COST_HEADER, cost_rows(advice), "costs"
        )
    samples = [
        [s["input"][:300], s["reference"][:300], *(s["predictions"][n]["text"][:300] for n in results["ranking"])]
        for s in results["samples"][:20]
    ]
    return Template(HTML_TEMPLATE).substitute(
        title=escape(f"openft evaluation {about.get('id', '')}".strip()),
        summary=escape(
            f"{results['n_examples']} held-out examples, base model {results['base_model']}, "
            f"k = {results['k']} shots, primary metric {results['primary_metric']}."
        ),
        recommendation=recommendation,
        strategies=_html_table(strategy_header(report), strategy_rows(report), "strategies")
        + "".join(f'<p class="note">{escape(note)}</p>' for note in rag_and_tool_notes(results)),
        plots="".join(f'<figure class="chart">{svg}</figure>' for svg in report_plots(report)),
        costs=costs,
        comparisons=html_sections(results, advice) + _html_comparisons(results),
        samples=_html_table(["input", "reference", *results["ranking"]], samples, "samples"),
    )


def render(report: dict[str, Any], fmt: str) -> tuple[str, str]:
    """(body, media type) of the report in `fmt` ("json", "md" or "html")."""
    import json

    if fmt == "json":
        return json.dumps(report, indent=2), "application/json"
    if fmt == "md":
        return to_markdown(report), "text/markdown; charset=utf-8"
    if fmt == "html":
        return to_html(report), "text/html; charset=utf-8"
    raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")

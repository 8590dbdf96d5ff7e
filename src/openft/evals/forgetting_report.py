"""The report's "Forgetting check" and "Rivals" sections (Markdown and HTML), from a run's results and advice."""

from __future__ import annotations

from html import escape
from typing import Any

from openft.evals.forgetting import MEASURES
from openft.evals.forgetting import advice as forgetting_advice
from openft.evals.paired import all_pairs
from openft.evals.rivals import rival_verdicts

MODEL_HEADER = ["model", "role", *(f"{m['label']} (95% CI)" for m in MEASURES)]
WARNING_STYLE = "background: #fff4e5; border-left: 4px solid #d9822b; padding: 4px 12px;"
CHANGE_HEADER = ["fine-tuned model", "measure", "base", "fine-tuned", "change (95% CI)", "p", "verdict"]


def _estimate(e: dict[str, Any] | None) -> str:
    return "n/a" if not e else f"{e['mean']:.3f} [{e['low']:.3f}, {e['high']:.3f}]"


def _verdict(c: dict[str, Any]) -> str:
    if c["forgot"]:
        return "WORSE: forgot"
    if c["significant"] and c["worse"]:
        return "slightly worse (within tolerance)"
    return "better" if c["significant"] else "no significant change"


def model_rows(check: dict[str, Any]) -> list[list[str]]:
    return [[m["model"], m["role"], *(_estimate(m.get(x["name"])) for x in MEASURES)] for m in check["models"]]


def change_rows(check: dict[str, Any]) -> list[list[str]]:
    return [
        [
            c["fine_tuned"],
            c["label"],
            f"{c['base_mean']:.3f}",
            f"{c['fine_tuned_mean']:.3f}",
            f"{c['change']:+.3f} [{c['low']:+.3f}, {c['high']:+.3f}]",
            f"{c['p_value']:.3g}",
            _verdict(c),
        ]
        for c in check["comparisons"]
    ]


def about_set(check: dict[str, Any]) -> str:
    s = check["set"]
    sources = ", ".join(
        f"{x['package']} {x.get('version') or ''} ({x['licence']}) for {x['part']}" for x in s["sources"]
    )
    return (
        f"Each fine-tuned model and its base on {s['n_items']} general items of {s['name']} ({s['n_conversations']} "
        f"conversations, {s['n_questions']} simple questions with 4 options; from {sources}; fingerprint "
        f"{s['fingerprint']}). Change = fine-tuned minus base, tested paired on the same items (p < "
        f"{check['alpha']:g}); a loss rise within {check['loss_tolerance']:.0%} of the base's loss is not warned "
        f"about. Scored in {check['seconds']:.1f} s."
    )


def _rivals(results: dict[str, Any], advice: dict[str, Any] | None) -> list[dict[str, Any]]:
    if advice is not None and "rivals" in advice:
        return advice["rivals"] or []
    return rival_verdicts(results, all_pairs(results)) if results.get("samples") else []


def _md_table(header: list[str], rows: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return [line(header), line(["---"] * len(header)), *map(line, rows)]


def markdown_sections(results: dict[str, Any], advice: dict[str, Any] | None) -> list[str]:
    out: list[str] = []
    rivals = _rivals(results, advice)
    if rivals:
        out += ["", "## Rivals: does the fine-tuned model match a bigger one?", ""]
        out += [f"- {r['verdict']}" for r in rivals]
    check = results.get("forgetting")
    if check:
        section = forgetting_advice(results) or {"warnings": []}
        out += ["", "## Forgetting check (general ability)", "", about_set(check), ""]
        out += [f"- **Warning:** {w}" for w in section["warnings"]] + ([""] if section["warnings"] else [])
        out += _md_table(MODEL_HEADER, model_rows(check)) + [""] + _md_table(CHANGE_HEADER, change_rows(check))
    return out


def _html_table(header: list[str], rows: list[list[str]], css_class: str) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{css_class}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def html_sections(results: dict[str, Any], advice: dict[str, Any] | None) -> str:
    parts = []
    rivals = _rivals(results, advice)
    if rivals:
        items = "".join(f"<li>{escape(r['verdict'])}</li>" for r in rivals)
        parts.append(f'<section class="rivals"><h2>Rivals: does the fine-tuned model match a bigger one?</h2>'
                     f"<ul>{items}</ul></section>")  # fmt: skip
    check = results.get("forgetting")
    if check:
        section = forgetting_advice(results) or {"warnings": []}
        warnings = "".join(
            f'<p class="warning" style="{WARNING_STYLE}"><strong>Warning:</strong> {escape(w)}</p>'
            for w in section["warnings"]
        )
        parts.append(
            '<section class="forgetting" id="forgetting"><h2>Forgetting check (general ability)</h2>'
            f"<p>{escape(about_set(check))}</p>{warnings}"
            + _html_table(MODEL_HEADER, model_rows(check), "forgetting-models")
            + _html_table(CHANGE_HEADER, change_rows(check), "forgetting-changes")
            + "</section>"
        )
    return "".join(parts)

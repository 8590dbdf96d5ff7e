"""Print a ValidationReport for people: problems by line, then statistics (used by `openft validate`).

The machine-readable form is `report.model_dump(mode="json")`.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from openft.data.report import Distribution, LineError, ValidationReport


def _problem_table(title: str, problems: list[LineError], total: int, style: str) -> Table:
    shown = f"{title} (first {len(problems)} of {total})" if total > len(problems) else f"{title} ({total})"
    table = Table(title=shown, title_style=style, title_justify="left", expand=False)
    table.add_column("line", justify="right", no_wrap=True)
    table.add_column("code", style=style, no_wrap=True)
    table.add_column("field", overflow="fold")
    table.add_column("message", overflow="fold")
    for problem in problems:
        line = str(problem.line) if problem.line is not None else "file"
        # Text(): field paths such as messages[0] must not be read as rich markup
        table.add_row(line, problem.code, Text(problem.field or ""), Text(problem.message))
    return table


def _distribution_row(table: Table, name: str, distribution: Distribution | None) -> None:
    if distribution is None:
        return
    d = distribution
    table.add_row(name, f"{d.min:,}", f"{d.mean:,.1f}", f"{d.p50:,}", f"{d.p95:,}", f"{d.max:,}", f"{d.total:,}")


def _stats_tables(report: ValidationReport) -> list[Table]:
    stats = report.stats
    counts = Table(title="Examples", title_justify="left", show_header=False)
    counts.add_column("stat")
    counts.add_column("value", justify="right")
    counts.add_row("format", report.format or "unknown")
    counts.add_row("lines", f"{stats.n_lines:,}")
    counts.add_row("examples", f"{stats.n_examples:,}")
    counts.add_row("valid examples", f"{stats.n_valid:,}")
    counts.add_row("duplicates", f"{stats.n_duplicates:,}")
    if stats.tokenizer is not None:
        counts.add_row("tokenizer", Text(stats.tokenizer))
        if stats.context_length is not None:
            counts.add_row("context length", f"{stats.context_length:,}")
            counts.add_row("examples over context", f"{stats.n_over_context or 0:,}")
        counts.add_row("billable tokens per epoch", f"{stats.billable_tokens_per_epoch or 0:,}")
    for name, count in report.openai_tokens.items():
        counts.add_row(f"OpenAI tokens ({name})", f"{count.total_tokens:,}")

    per_example = Table(title="Per example", title_justify="left")
    for column in ("", "min", "mean", "p50", "p95", "max", "total"):
        per_example.add_column(column, justify="left" if not column else "right")
    _distribution_row(per_example, "messages", stats.messages_per_example)
    _distribution_row(per_example, "tokens", stats.tokens_per_example)
    _distribution_row(per_example, "trained tokens", stats.assistant_tokens_per_example)
    for name, count in report.openai_tokens.items():
        _distribution_row(per_example, f"OpenAI tokens ({name})", count.tokens_per_example)
    return [counts, per_example] if per_example.row_count else [counts]


def _moderation_table(report: ValidationReport) -> Table:
    m = report.moderation
    shown = len(m.findings)
    title = f"Moderation findings (first {shown} of {m.n_findings})" if m.n_findings > shown else "Moderation findings"
    table = Table(title=title, title_style="magenta", title_justify="left", expand=False)
    for column in ("line", "field", "detector", "category", "excerpt"):
        table.add_column(column, overflow="fold", justify="right" if column == "line" else "left")
    for f in m.findings:
        table.add_row(str(f.line), Text(f.field or ""), f.detector, f.category, Text(f.excerpt))
    return table


def render_report(report: ValidationReport, console: Console) -> None:
    """Errors and warnings (line, code, field, message), then statistics, then a one-line verdict."""
    if report.errors:
        console.print(_problem_table("Errors", report.errors, report.n_errors, "red"))
    if report.warnings:
        console.print(_problem_table("Warnings", report.warnings, report.n_warnings, "yellow"))
    if report.moderation and report.moderation.findings:
        console.print(_moderation_table(report))
    for table in _stats_tables(report):
        console.print(table)
    verdict = "[green]OK[/green]" if report.ok else "[red]INVALID[/red]"
    console.print(f"{verdict} {escape(report.summary())}", highlight=False)

"""A per-example collector of problems; the file-level driver adds line numbers."""

from __future__ import annotations

from dataclasses import dataclass, field

from openft.data.codes import CODES, Severity


@dataclass(frozen=True)
class Issue:
    code: str
    field: str | None
    message: str

    @property
    def severity(self) -> Severity:
        return CODES[self.code].severity


@dataclass
class Issues:
    """Checks append here instead of raising, so one example can report every problem it has."""

    items: list[Issue] = field(default_factory=list)

    def add(self, code: str, field_path: str | None, message: str) -> None:
        if code not in CODES:
            raise KeyError(f"undocumented validation code {code!r}")  # programming error, caught in tests
        self.items.append(Issue(code, field_path, message))

    @property
    def has_errors(self) -> bool:
        return any(issue.severity is Severity.ERROR for issue in self.items)


def join_path(parent: str | None, child: str | int) -> str:
    """JSON field paths the way people write them: messages[2].tool_calls[0].function.arguments."""
    if isinstance(child, int):
        return f"{parent or ''}[{child}]"
    return f"{parent}.{child}" if parent else child

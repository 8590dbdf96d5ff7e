"""Validate a fine-tuning JSONL file in one streaming pass: every problem with its line, code and field,
statistics, and token counts with the base model's tokenizer and with OpenAI's encodings.

The file's format is the format of its first valid example. Lines are checked as they are read, so each
format keeps its own statistics; once the file ends, the file's format picks which statistics count and
lines of any other format become `mixed_formats` errors. Memory stays bounded: one line at a time, one
byte per line for its format, 8 bytes per valid example for each statistic, and at most `max_issues`
kept errors and warnings (all of them are still counted).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from os import PathLike
from typing import Any, BinaryIO

from openft.data.codes import Severity
from openft.data.formats import FORMAT_SHAPES, FORMATS, Format, check_example, detect_format
from openft.data.issues import Issues
from openft.data.lines import (
    DEFAULT_MAX_LINE_BYTES,
    RawLine,
    canonical_json,
    parse_json,
    read_lines,
    strip_line_end,
)
from openft.data.openai_tokens import OpenAITokenCounter
from openft.data.report import OPENAI_ENCODINGS, LineError, Samples, Stats, ValidationReport
from openft.data.token_stats import count_tokens, tokenizer_name

MIN_EXAMPLES = 10  # OpenAI refuses training files with fewer examples
DEFAULT_MAX_ISSUES = 1000

# One byte per line records what the line was, so format decisions can wait for the end of the file.
_NOT_AN_EXAMPLE = 0  # blank, unreadable, or not a JSON object
_UNKNOWN_FORMAT = 255
_FORMAT_CODE = {fmt: index + 1 for index, fmt in enumerate(FORMATS)}
_UNKNOWN_FORMAT_CODE = {None: "missing_messages_list", "chat": "missing_messages_list"}
_UNKNOWN_FORMAT_CODE |= {"dpo": "dpo_missing_input", "completion": "missing_prompt", "rft": "missing_messages_list"}
# (file format, line format) -> (code, message) for lines that belong to a neighbouring format
_MISFIT = {
    ("chat", "rft"): ("example_missing_assistant_message", "add at least one assistant message for the model to learn"),
    ("rft", "chat"): ("mixed_formats", "the last message is from the assistant, but this file holds reinforcement "
                      "fine-tuning prompts: each must end with a user or developer message for the model to answer"),
}


@dataclass
class _FormatStats:
    """Statistics of the valid examples of one format."""

    n_valid: int = 0
    n_duplicates: int = 0
    n_over_context: int = 0
    billable_tokens: int = 0
    first_valid_line: int | None = None
    seen: dict[int, int] = field(default_factory=dict)  # 8-byte hash of canonical JSON -> first line
    messages: Samples = field(default_factory=Samples)
    tokens: Samples = field(default_factory=Samples)
    trained_tokens: Samples = field(default_factory=Samples)
    openai: OpenAITokenCounter | None = None


@dataclass
class _Kept:
    """The first `limit` problems of one severity, plus counts of all of them."""

    limit: int
    items: list[LineError] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)

    def add(self, error: LineError) -> None:
        self.counts[error.code] += 1
        if len(self.items) < self.limit:
            self.items.append(error)


class _Validator:
    def __init__(
        self,
        tokenizer: Any,
        context_length: int | None,
        template_options: dict[str, Any],
        openai_encodings: tuple[str, ...],
        min_examples: int,
        max_issues: int,
        moderate: bool = True,
    ) -> None:
        self.tokenizer = tokenizer
        self.context_length = context_length
        self.template_options = template_options
        self.openai_encodings = openai_encodings
        self.min_examples = min_examples
        self.errors = _Kept(max_issues)
        self.warnings = _Kept(max_issues)
        self.line_kinds = bytearray()
        self.n_lines = 0
        self.stopped_after: float | None = None  # seconds, when the time budget ran out before the end of the file
        self.n_examples = 0
        self.first_detected: Format | None = None
        self.by_format = {fmt: _FormatStats() for fmt in FORMATS}
        self.moderation = None
        if moderate:  # personal data, secrets, harmful content (openft.data.moderation)
            from openft.data.moderation import ModerationCollector

            self.moderation = ModerationCollector(limit=max_issues)

    # --- per line -----------------------------------------------------------------------------------------

    def _report(self, line: int | None, issues: Issues) -> None:
        for issue in issues.items:
            kept = self.errors if issue.severity is Severity.ERROR else self.warnings
            kept.add(LineError(line=line, code=issue.code, message=issue.message, field=issue.field))

    def feed(self, data: bytes | None, size: int, max_line_bytes: int) -> None:
        self.n_lines += 1
        line = self.n_lines
        issues = Issues()
        kind = _NOT_AN_EXAMPLE
        try:
            kind = self._check_line(line, data, size, max_line_bytes, issues)
        except Exception as exc:  # a validator bug must not hide the rest of the report
            issues.add("internal_error", None, f"validation failed on this line: {type(exc).__name__}: {exc}")
        self.line_kinds.append(kind)
        self._report(line, issues)

    def _check_line(self, line: int, data: bytes | None, size: int, max_line_bytes: int, issues: Issues) -> int:
        if data is None:
            self.n_examples += 1
            issues.add("line_too_long", None, f"the line is {size:,} bytes; the limit is {max_line_bytes:,} bytes")
            return _NOT_AN_EXAMPLE
        data = strip_line_end(data, first=line == 1)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            self.n_examples += 1
            issues.add("invalid_utf8", None, f"byte {exc.start + 1} of the line is not UTF-8; save the file as UTF-8")
            return _NOT_AN_EXAMPLE
        if not text.strip():
            issues.add(
                "blank_line", None, "blank line skipped; remove it, since stricter JSONL readers reject blank lines"
            )
            return _NOT_AN_EXAMPLE
        self.n_examples += 1
        try:
            example = parse_json(text)
            canonical = canonical_json(example)
        except RecursionError:
            issues.add("invalid_json", None, "the JSON is nested too deeply")
            return _NOT_AN_EXAMPLE
        except UnicodeEncodeError:
            issues.add("invalid_utf8", None, "the line holds an unpaired surrogate escape such as \\ud800")
            return _NOT_AN_EXAMPLE
        except ValueError as exc:
            issues.add("invalid_json", None, f"not valid JSON: {exc}")
            return _NOT_AN_EXAMPLE
        if not isinstance(example, dict):
            issues.add("data_type", None, f"each line must be a JSON object, got {type(example).__name__}")
            return _NOT_AN_EXAMPLE
        if self.moderation is not None:
            self.moderation.add_example(example, line)
        fmt = detect_format(example)
        if fmt is None:
            return _UNKNOWN_FORMAT
        self.first_detected = self.first_detected or fmt
        check_example(example, fmt, issues)
        if not issues.has_errors:
            self._count_valid(line, example, canonical, fmt, issues)
        return _FORMAT_CODE[fmt]

    def _count_valid(self, line: int, example: dict, canonical: bytes, fmt: Format, issues: Issues) -> None:
        stats = self.by_format[fmt]
        if self.tokenizer is not None:
            try:
                tokens = count_tokens(self.tokenizer, example, fmt, self.template_options)
            except Exception as exc:
                issues.add("template_error", None, f"the chat template cannot render it: {type(exc).__name__}: {exc}")
                return
            stats.tokens.add(tokens.total)
            stats.trained_tokens.add(tokens.trained)
            if self.context_length is not None and tokens.total > self.context_length:
                stats.n_over_context += 1
                issues.add(
                    "example_too_long",
                    None,
                    f"{tokens.total:,} tokens but the base model's context is {self.context_length:,}: "
                    f"training keeps the first {self.context_length:,} and drops the rest",
                )
            limit = self.context_length or tokens.total
            stats.billable_tokens += min(limit, tokens.total)
        stats.n_valid += 1
        stats.first_valid_line = stats.first_valid_line or line
        if fmt in ("chat", "rft"):
            stats.messages.add(len(example["messages"]))
        elif fmt == "dpo":
            stats.messages.add(len(example["input"]["messages"]) + len(example["preferred_output"]))
        digest = int.from_bytes(hashlib.blake2b(canonical, digest_size=8).digest(), "big")
        first = stats.seen.setdefault(digest, line)
        if first != line:
            stats.n_duplicates += 1
            issues.add("duplicate_example", None, f"identical to line {first}; duplicates over-weight one example")
        if self.openai_encodings:
            stats.openai = stats.openai or OpenAITokenCounter(self.openai_encodings)
            stats.openai.add(example, fmt)

    # --- end of file --------------------------------------------------------------------------------------

    def _file_format(self) -> Format | None:
        valid = [(s.first_valid_line, fmt) for fmt, s in self.by_format.items() if s.first_valid_line]
        chat, rft = self.by_format["chat"].n_valid, self.by_format["rft"].n_valid
        if chat and rft:  # a chat file with a line missing its answer, or RFT prompts with one answered: majority
            return "rft" if rft > chat else "chat"
        return min(valid)[1] if valid else self.first_detected

    def _deferred_errors(self, file_format: Format | None) -> _Kept:
        """Lines whose format differs from the file's, or that match no format; known only at the end."""
        deferred = _Kept(self.errors.limit)
        file_code = _FORMAT_CODE.get(file_format)
        names = {code: fmt for fmt, code in _FORMAT_CODE.items()}
        for index, kind in enumerate(self.line_kinds):
            if kind == _NOT_AN_EXAMPLE or kind == file_code:
                continue
            if kind == _UNKNOWN_FORMAT:
                code = _UNKNOWN_FORMAT_CODE[file_format]
                message = f"the line matches no training format; expected {FORMAT_SHAPES}"
            elif (file_format, names[kind]) in _MISFIT:
                code, message = _MISFIT[(file_format, names[kind])]
            else:
                code = "mixed_formats"
                message = f"this is a {names[kind]} example, but the file holds {file_format} examples"
            field = "messages" if (file_format, names.get(kind)) in _MISFIT else None
            deferred.add(LineError(line=index + 1, code=code, message=message, field=field))
        return deferred

    def _file_errors(self, n_valid: int) -> list[LineError]:
        if self.stopped_after is not None:
            # The rest of the file was never read: the counts behind empty_file / too_few_examples are partial.
            return [timeout_error(self.stopped_after, self.n_lines)]
        if self.n_examples == 0:
            return [LineError(line=None, code="empty_file", message="the file holds no examples")]
        if n_valid < self.min_examples:
            return [
                LineError(
                    line=None,
                    code="too_few_examples",
                    message=f"{n_valid} valid example{'s' * (n_valid != 1)}; at least {self.min_examples} "
                    "are required (50-100 well-chosen examples usually work better)",
                )
            ]
        return []

    def finish(self) -> ValidationReport:
        file_format = self._file_format()
        stats = self.by_format[file_format] if file_format else _FormatStats()
        deferred = self._deferred_errors(file_format)
        file_errors = self._file_errors(stats.n_valid)
        limit = self.errors.limit
        errors = sorted(
            [*file_errors, *self.errors.items, *deferred.items], key=lambda e: (e.line is not None, e.line or 0)
        )[:limit]
        error_counts = self.errors.counts + deferred.counts + Counter(e.code for e in file_errors)
        has_tokens = self.tokenizer is not None
        report_stats = Stats(
            n_lines=self.n_lines,
            n_examples=self.n_examples,
            n_valid=stats.n_valid,
            n_duplicates=stats.n_duplicates,
            messages_per_example=stats.messages.distribution(),
            tokenizer=tokenizer_name(self.tokenizer) if has_tokens else None,
            context_length=self.context_length,
            tokens_per_example=stats.tokens.distribution(),
            assistant_tokens_per_example=stats.trained_tokens.distribution(),
            n_over_context=stats.n_over_context if has_tokens and self.context_length else None,
            billable_tokens_per_epoch=stats.billable_tokens if has_tokens else None,
        )
        openai = stats.openai or OpenAITokenCounter(self.openai_encodings)
        return ValidationReport(
            format=file_format,
            ok=not error_counts,
            errors=errors,
            warnings=self.warnings.items,
            n_errors=sum(error_counts.values()),
            n_warnings=sum(self.warnings.counts.values()),
            error_counts=dict(sorted(error_counts.items())),
            warning_counts=dict(sorted(self.warnings.counts.items())),
            stats=report_stats,
            openai_tokens=openai.result(),
            moderation=self.moderation.result() if self.moderation is not None else None,
        )


def _resolve_model(
    tokenizer: Any, context_length: int | None, base_model: str | None
) -> tuple[Any, int | None, dict[str, Any]]:
    """Fill the tokenizer, context length and template options in from the base model registry."""
    if base_model is None:
        return tokenizer, context_length, {}
    from openft.models.registry import get_base_model, load_tokenizer

    model = get_base_model(base_model)  # raises ModelNotFound: a caller's mistake, not the file's
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(base_model)
    context_length = context_length if context_length is not None else model.context_length
    return tokenizer, context_length, {"default_system_prompt": model.default_system_prompt}


def _validate(raw_lines: Iterable[RawLine], options: dict[str, Any]) -> ValidationReport:
    tokenizer, context_length, template_options = _resolve_model(
        options.get("tokenizer"), options.get("context_length"), options.get("base_model")
    )
    validator = _Validator(
        tokenizer,
        context_length,
        template_options,
        options.get("openai_encodings", OPENAI_ENCODINGS),
        options.get("min_examples", MIN_EXAMPLES),
        options.get("max_issues", DEFAULT_MAX_ISSUES),
        options.get("moderate", True),
    )
    max_line_bytes = options.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)
    deadline = options.get("deadline")  # time.monotonic() value; past it, validation stops after the current line
    started = time.monotonic()
    for raw in raw_lines:
        validator.feed(raw.data, raw.size, max_line_bytes)
        if deadline is not None and time.monotonic() > deadline:
            validator.stopped_after = deadline - started  # the budget
            break
    return validator.finish()


def timeout_error(budget: float, lines_checked: int | None) -> LineError:
    """The whole-file error of a validation that ran out of its time budget (OPENFT_VALIDATION_TIMEOUT_SECONDS)."""
    if lines_checked is None:
        where = "it was stopped while checking a line, so the file was not fully checked"
    else:
        where = f"it stopped after line {lines_checked:,}; the lines after it were not checked"
    return LineError(
        line=None,
        code="validation_timeout",
        message=f"validation ran out of time (budget {budget:.3g} s, OPENFT_VALIDATION_TIMEOUT_SECONDS): {where}. "
        "The file is stored; split it into smaller files, or ask the operator to raise the budget",
    )


def validate_lines(
    lines: Iterable[bytes],
    *,
    tokenizer: Any = None,
    context_length: int | None = None,
    base_model: str | None = None,
    openai_encodings: tuple[str, ...] = OPENAI_ENCODINGS,
    min_examples: int = MIN_EXAMPLES,
    max_issues: int = DEFAULT_MAX_ISSUES,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
    moderate: bool = True,
    deadline: float | None = None,
) -> ValidationReport:
    """Validate an iterable of raw lines (bytes, with or without their newline). Each line is held only
    while it is checked. Pass `openai_encodings=()` to skip OpenAI token counting and `min_examples=1`
    for a validation file (OpenAI's minimum of 10 applies to training files), `moderate=False` to skip the
    moderation scan (personal data, secrets, harmful content; docs/moderation.md). `deadline` (a
    `time.monotonic()` value) stops validation after the line being checked when it passes: the report then
    covers the lines read so far and holds a `validation_timeout` error.
    """
    options = {
        "tokenizer": tokenizer,
        "context_length": context_length,
        "base_model": base_model,
        "openai_encodings": openai_encodings,
        "min_examples": min_examples,
        "max_issues": max_issues,
        "moderate": moderate,
        "deadline": deadline,
    }
    raw_lines = (RawLine(data if len(data) <= max_line_bytes else None, len(data)) for data in lines)
    return _validate(raw_lines, options)


def validate_stream(stream: BinaryIO, **options: Any) -> ValidationReport:
    """Validate an open binary stream (an upload, a stored blob) without reading it whole; takes the
    keyword options of validate_lines. An over-long line is skipped in chunks, never held in memory."""
    return _validate(read_lines(stream, options.get("max_line_bytes", DEFAULT_MAX_LINE_BYTES)), options)


def validate_file(
    path: str | PathLike[str],
    *,
    tokenizer: Any = None,
    context_length: int | None = None,
    base_model: str | None = None,
    **options: Any,
) -> ValidationReport:
    """Validate a JSONL training file on disk.

    `base_model` (a registry name) supplies the tokenizer, context length and default system prompt;
    `tokenizer` and `context_length` override it. Without either, token statistics are None but every
    structural check still runs. Never raises because of the file's contents.
    """
    with open(path, "rb") as stream:
        return validate_stream(
            stream, tokenizer=tokenizer, context_length=context_length, base_model=base_model, **options
        )

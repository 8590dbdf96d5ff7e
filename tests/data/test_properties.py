"""Whatever bytes arrive, validation returns a well-formed report and never raises."""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from openft.data import CODES, ValidationReport, validate_lines

_json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
_json_values = st.recursive(
    _json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
# JSON shaped like training examples, so the deeper checks run too
_roles = st.sampled_from(["system", "user", "assistant", "tool", "function", "developer", "bot"])
_messages = st.lists(
    st.fixed_dictionaries(
        {"role": _roles},
        optional={
            "content": _json_values,
            "weight": _json_values,
            "tool_calls": _json_values,
            "tool_call_id": st.text(max_size=5),
            "name": _json_values,
        },
    ),
    max_size=5,
)
_examples = st.one_of(
    st.fixed_dictionaries(
        {"messages": _messages}, optional={"tools": _json_values, "parallel_tool_calls": _json_values}
    ),
    st.fixed_dictionaries(
        {"input": st.fixed_dictionaries({"messages": _messages}) | _json_values},
        optional={"preferred_output": _messages | _json_values, "non_preferred_output": _messages},
    ),
    st.fixed_dictionaries({}, optional={"prompt": _json_values, "completion": _json_values}),
    _json_values,
)


def _assert_well_formed(report: ValidationReport, n_lines: int) -> None:
    assert ValidationReport.model_validate(report.model_dump(mode="json")) == report
    assert report.ok is (report.n_errors == 0)
    assert report.n_errors == sum(report.error_counts.values()) >= len(report.errors)
    assert report.n_warnings == sum(report.warning_counts.values()) >= len(report.warnings)
    for problem in report.errors + report.warnings:
        assert problem.code in CODES and problem.code != "internal_error", problem
        assert problem.line is None or 1 <= problem.line <= n_lines
    assert report.stats.n_valid <= report.stats.n_examples <= report.stats.n_lines == n_lines
    assert isinstance(report.summary(), str)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=60), max_size=8))
def test_arbitrary_bytes_never_raise(lines):
    report = validate_lines(lines, openai_encodings=())
    _assert_well_formed(report, len(lines))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_examples, min_size=1, max_size=6))
def test_arbitrary_json_lines_never_raise(examples):
    lines = [json.dumps(example).encode() for example in examples]
    report = validate_lines(lines)
    _assert_well_formed(report, len(lines))


def test_pathological_lines_give_precise_errors():
    lines = [b"[" * 100_000, b'{"a": NaN}', b'{"messages": "\\ud800"}', b"\x00\x00", b"   "]
    report = validate_lines(lines)
    found = [(e.line, e.code) for e in report.errors if e.line is not None]
    assert found == [(1, "invalid_json"), (2, "invalid_json"), (3, "invalid_utf8"), (4, "invalid_json")]
    assert [(w.line, w.code) for w in report.warnings] == [(5, "blank_line")]

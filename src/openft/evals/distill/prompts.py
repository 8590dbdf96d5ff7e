"""The prompt file of a distillation: chat JSONL without the final assistant turn (the teacher writes it).

Each line is `{"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool, ...}`; other keys are kept as
the item a grader filter reads (`{{item.reference}}`) and are left out of the training file. Every problem is
reported with its line and field, the way upload validation reports training files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from openft.data.codes import Severity
from openft.data.issues import Issues
from openft.data.lines import parse_json, read_lines, strip_line_end
from openft.data.messages import check_messages, check_tools, json_kind

MAX_PROMPTS = 100_000
CONTEXT_KEYS = ("tools", "parallel_tool_calls")
ANSWERED_BY_TEACHER = ("user", "tool")  # the last message the teacher answers


@dataclass(frozen=True)
class Prompt:
    line: int  # 1-based line in the prompt file
    messages: list[dict[str, Any]]
    context: dict[str, Any]  # tools / parallel_tool_calls, sent to the teacher and kept in the training line
    item: dict[str, Any]  # the whole line, for graders


@dataclass(frozen=True)
class LineProblem:
    line: int | None
    field: str | None
    message: str

    def describe(self) -> str:
        where = f"line {self.line}" if self.line is not None else "the file"
        return f"{where}" + (f", {self.field}" if self.field else "") + f": {self.message}"


class PromptFileError(ValueError):
    """The prompt file has problems; `problems` lists each with its line and field."""

    def __init__(self, problems: list[LineProblem]) -> None:
        self.problems = problems
        shown = "; ".join(p.describe() for p in problems[:5])
        more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
        super().__init__(f"{len(problems)} problem(s) in the prompt file: {shown}{more}")


def check_prompt(example: Any, line: int) -> tuple[Prompt | None, list[LineProblem]]:
    if not isinstance(example, dict):
        return None, [LineProblem(line, None, f"each line must be a JSON object, got {json_kind(example)}")]
    issues = Issues()
    tool_names = check_tools(example["tools"], issues) if "tools" in example else None
    if "parallel_tool_calls" in example and not isinstance(example["parallel_tool_calls"], bool):
        issues.add("invalid_parallel_tool_calls", "parallel_tool_calls", "parallel_tool_calls must be true or false")
    if "messages" not in example:
        issues.add("missing_messages_list", "messages", "the line has no messages array")
    else:
        check_messages(example["messages"], issues, "messages", tool_names=tool_names,
                       parallel_tool_calls=example.get("parallel_tool_calls"), request=True)  # fmt: skip
    problems = [LineProblem(line, i.field, i.message) for i in issues.items if i.severity is Severity.ERROR]
    messages = example.get("messages")
    if not problems and isinstance(messages, list) and messages:
        last = messages[-1].get("role")
        if last == "assistant":
            problems.append(LineProblem(line, f"messages[{len(messages) - 1}]", "the prompt ends with an assistant "
                                        "message: remove the final assistant turn, the teacher writes it"))
        elif last not in ANSWERED_BY_TEACHER:
            problems.append(LineProblem(line, f"messages[{len(messages) - 1}].role",
                                        f"the last message must be from the user (or a tool), not {last!r}"))
    if problems:
        return None, problems
    context = {key: example[key] for key in CONTEXT_KEYS if key in example}
    return Prompt(line=line, messages=messages, context=context, item=example), []


def read_prompts(path: Path, max_problems: int = 100) -> list[Prompt]:
    """Every prompt of the file, or PromptFileError listing (up to `max_problems`) problems with their lines."""
    prompts: list[Prompt] = []
    problems: list[LineProblem] = []
    with open(path, "rb") as stream:
        for index, raw in enumerate(read_lines(stream), start=1):
            if raw.data is None:
                problems.append(LineProblem(index, None, f"the line is {raw.size:,} bytes long, over the limit"))
                continue
            try:
                text = strip_line_end(raw.data, index == 1).decode("utf-8")
            except UnicodeDecodeError:
                problems.append(LineProblem(index, None, "the line is not valid UTF-8"))
                continue
            if not text.strip():
                continue  # blank lines (a trailing newline) carry no prompt
            try:
                example = parse_json(text)
            except ValueError as exc:
                problems.append(LineProblem(index, None, f"not valid JSON ({exc})"))
                continue
            prompt, found = check_prompt(example, index)
            problems.extend(found)
            if prompt is not None:
                prompts.append(prompt)
            if len(problems) >= max_problems:
                break
    if not problems and not prompts:
        problems.append(LineProblem(None, None, "the file holds no prompts"))
    if not problems and len(prompts) > MAX_PROMPTS:
        problems.append(LineProblem(None, None, f"{len(prompts):,} prompts; at most {MAX_PROMPTS:,} per distillation"))
    if problems:
        raise PromptFileError(problems)
    return prompts

"""The training-file formats: how a line is recognised and what makes an example valid.

`rft` (reinforcement fine-tuning) lines are chat prompts without the answer: `messages` end with a user or
developer message, and every other top-level field is kept for the grader (`{{item.*}}`).
"""

from __future__ import annotations

from typing import Any, Literal

from openft.data.issues import Issues, join_path
from openft.data.messages import (
    Conversation,
    check_functions,
    check_message,
    check_messages,
    check_tools,
    json_kind,
)

Format = Literal["chat", "dpo", "completion", "rft"]
FORMATS: tuple[Format, ...] = ("chat", "dpo", "completion", "rft")
RFT_PROMPT_ROLES = ("user", "developer")

CHAT_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
DPO_KEYS = {"input", "preferred_output", "non_preferred_output"}
DPO_INPUT_KEYS = {"messages", "tools", "parallel_tool_calls", "functions"}
COMPLETION_KEYS = {"prompt", "completion"}

FORMAT_SHAPES = (
    '{"messages": [...]} (chat), {"input": {"messages": [...]}, "preferred_output": [...], '
    '"non_preferred_output": [...]} (preference/DPO), {"prompt": "...", "completion": "..."} (legacy) or '
    '{"messages": [..., {"role": "user", ...}], "<grader field>": ...} (reinforcement)'
)


def detect_format(example: dict) -> Format | None:
    """The format a JSON object is trying to be, judged by its keys; None when it looks like none.

    Preference keys win over `messages`, so the common mistake of putting a DPO prompt under a top-level
    `messages` is reported as a DPO example missing its `input`, not as a chat line in the wrong format.
    """
    if "preferred_output" in example or "non_preferred_output" in example:
        return "dpo"
    if "messages" in example:
        return "rft" if _looks_like_rft(example) else "chat"
    if "input" in example:
        return "dpo"
    if "prompt" in example or "completion" in example:
        return "completion"
    return None


def _looks_like_rft(example: dict) -> bool:
    """A prompt waiting for its answer: the last message is from the user (or developer), and either no
    assistant message came before it or the line carries fields for a grader. A chat line that merely ends
    with a stray user turn (and has no extra fields) stays a chat line, with its warning."""
    messages = example.get("messages")
    if not isinstance(messages, list) or not messages or not isinstance(messages[-1], dict):
        return False
    if messages[-1].get("role") not in RFT_PROMPT_ROLES:
        return False
    has_assistant = any(isinstance(m, dict) and m.get("role") == "assistant" for m in messages)
    return not has_assistant or bool(example.keys() - CHAT_KEYS)


def _warn_unrecognized(example: dict, allowed: set[str], issues: Issues, path: str | None = None) -> None:
    for key in sorted(example.keys() - allowed):
        issues.add("unrecognized_key", join_path(path, key), f"key {key!r} is not part of the format and is ignored")


def _check_tool_context(holder: dict, issues: Issues, path: str | None) -> set[str] | None:
    """Validate tools/functions/parallel_tool_calls; returns the declared names (None: none declared)."""
    names: set[str] | None = None
    problems_before = len(issues.items)
    if "tools" in holder:
        names = check_tools(holder["tools"], issues, join_path(path, "tools"))
    if "functions" in holder:
        names = (names or set()) | check_functions(holder["functions"], issues, join_path(path, "functions"))
    parallel = holder.get("parallel_tool_calls")
    if "parallel_tool_calls" in holder and not isinstance(parallel, bool):
        issues.add(
            "invalid_parallel_tool_calls",
            join_path(path, "parallel_tool_calls"),
            f"parallel_tool_calls must be true or false, got {json_kind(parallel)}",
        )
    if len(issues.items) > problems_before:
        return None  # broken definitions: calls cannot be checked against them without false alarms
    return names


def check_chat(example: dict, issues: Issues) -> Conversation:
    _warn_unrecognized(example, CHAT_KEYS, issues)
    tool_names = _check_tool_context(example, issues, None)
    if "messages" not in example:
        issues.add("missing_messages_list", "messages", "the example has no messages array")
        return Conversation()
    conversation = check_messages(
        example["messages"],
        issues,
        "messages",
        tool_names=tool_names,
        parallel_tool_calls=example.get("parallel_tool_calls"),
    )
    if not isinstance(example["messages"], list) or not example["messages"]:
        return conversation
    if conversation.n_assistant == 0:
        issues.add(
            "example_missing_assistant_message", "messages", "add at least one assistant message for the model to learn"
        )
    elif conversation.n_trained_assistant == 0:
        issues.add(
            "empty_assistant_mask", "messages", "every assistant message has weight 0: set weight 1 on at least one"
        )
    elif conversation.last_role not in (None, "assistant"):
        issues.add(
            "last_message_not_assistant",
            join_path("messages", len(example["messages"]) - 1),
            "messages after the last assistant message add tokens but are never trained on",
        )
    return conversation


def _check_output(output: Any, issues: Issues, path: str, conversation: Conversation, tool_names, parallel) -> None:
    if output is None:
        issues.add("dpo_missing_output", path, f"{path} is missing: give a list with one assistant message")
        return
    if not isinstance(output, list) or not output:
        issues.add(
            "dpo_missing_output", path, f"{path} must be a list with one assistant message, got {json_kind(output)}"
        )
        return
    if len(output) > 1:
        issues.add("dpo_multiple_outputs", path, f"{path} must hold exactly one assistant message, found {len(output)}")
    for index, message in enumerate(output):
        message_path = join_path(path, index)
        if isinstance(message, dict) and message.get("role") != "assistant" and "role" in message:
            issues.add(
                "dpo_output_not_assistant",
                join_path(message_path, "role"),
                f"outputs must be assistant messages, got role {str(message.get('role'))[:40]!r}",
            )
            continue
        # each output continues the same prompt, so tool-call ids must not leak from one output into the other
        scratch = Conversation(call_ids=set(conversation.call_ids))
        check_message(message, issues, message_path, scratch, tool_names, parallel)


def check_dpo(example: dict, issues: Issues) -> Conversation:
    prompt = example.get("input")
    misplaced_prompt = "messages" in example and not isinstance(prompt, dict)
    # a top-level `messages` without `input` is reported once, as dpo_missing_input, not also as ignored
    _warn_unrecognized(example, DPO_KEYS | ({"messages"} if misplaced_prompt else set()), issues)
    conversation = Conversation()
    tool_names: set[str] | None = None
    parallel = None
    if not isinstance(prompt, dict) or "messages" not in prompt:
        hint = " (move the top-level messages under input)" if misplaced_prompt else ""
        issues.add("dpo_missing_input", "input", f'a preference example needs "input": {{"messages": [...]}}{hint}')
    else:
        _warn_unrecognized(prompt, DPO_INPUT_KEYS, issues, "input")
        tool_names = _check_tool_context(prompt, issues, "input")
        parallel = prompt.get("parallel_tool_calls")
        conversation = check_messages(
            prompt["messages"], issues, "input.messages", tool_names=tool_names, parallel_tool_calls=parallel
        )
    preferred = example.get("preferred_output")
    non_preferred = example.get("non_preferred_output")
    _check_output(preferred, issues, "preferred_output", conversation, tool_names, parallel)
    _check_output(non_preferred, issues, "non_preferred_output", conversation, tool_names, parallel)
    if preferred is not None and preferred == non_preferred:
        issues.add("dpo_identical_outputs", "non_preferred_output", "preferred and non-preferred outputs are the same")
    return conversation


def check_completion(example: dict, issues: Issues) -> None:
    _warn_unrecognized(example, COMPLETION_KEYS, issues)
    prompt = example.get("prompt")
    completion = example.get("completion")
    if not isinstance(prompt, str):
        issues.add("missing_prompt", "prompt", f"prompt must be a string, got {json_kind(prompt)}")
    if not isinstance(completion, str) or not completion.strip():
        got = "an empty string" if isinstance(completion, str) else json_kind(completion)
        issues.add("missing_completion", "completion", f"completion must be non-empty text, got {got}")


def check_rft(example: dict, issues: Issues) -> Conversation:
    """A reinforcement fine-tuning prompt: its messages are checked like chat messages; extra top-level
    fields are the grader's `item` and are kept, not warned about."""
    tool_names = _check_tool_context(example, issues, None)
    return check_messages(
        example["messages"],
        issues,
        "messages",
        tool_names=tool_names,
        parallel_tool_calls=example.get("parallel_tool_calls"),
    )


def check_example(example: dict, fmt: Format, issues: Issues) -> None:
    if fmt == "chat":
        check_chat(example, issues)
    elif fmt == "rft":
        check_rft(example, issues)
    elif fmt == "dpo":
        check_dpo(example, issues)
    else:
        check_completion(example, issues)

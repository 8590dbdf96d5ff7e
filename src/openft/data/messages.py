"""Checks for chat messages, tool calls and tool definitions, shared by the chat and DPO formats."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from openft.data.issues import Issues, join_path

ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_COMMON_KEYS = {"role", "content", "name"}
_ALLOWED_KEYS = {
    "system": _COMMON_KEYS,
    "developer": _COMMON_KEYS,
    "user": _COMMON_KEYS,
    "assistant": _COMMON_KEYS | {"tool_calls", "function_call", "weight", "refusal"},
    "tool": _COMMON_KEYS | {"tool_call_id"},
    "function": _COMMON_KEYS,
}
_FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TOOL_KEYS = {"type", "function"}
_FUNCTION_KEYS = {"name", "description", "parameters", "strict"}


def json_kind(value: Any) -> str:
    """The JSON type name of a parsed value, for messages a person reads."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {str: "string", list: "array", dict: "object"}.get(type(value), type(value).__name__)


@dataclass
class Conversation:
    """What the checks learned about one list of messages, for the example-level rules."""

    n_messages: int = 0
    n_assistant: int = 0
    n_trained_assistant: int = 0
    last_role: str | None = None
    call_ids: set[str] = field(default_factory=set)


# --- tool definitions -------------------------------------------------------------------------------------


def check_function_definition(function: Any, issues: Issues, path: str) -> str | None:
    """Validate one function schema; returns its name when usable."""
    if not isinstance(function, dict):
        issues.add("invalid_tool_definition", path, f"must be an object with a name, got {json_kind(function)}")
        return None
    name = function.get("name")
    if not isinstance(name, str) or not _FUNCTION_NAME.match(name):
        issues.add(
            "invalid_tool_definition",
            join_path(path, "name"),
            f"function name must be 1-64 letters, digits, '_' or '-', got {json.dumps(name)[:80]}",
        )
        name = None
    if "description" in function and not isinstance(function["description"], str):
        issues.add("invalid_tool_definition", join_path(path, "description"), "description must be a string")
    if "parameters" in function and not isinstance(function["parameters"], dict):
        issues.add(
            "invalid_tool_definition",
            join_path(path, "parameters"),
            f"parameters must be a JSON Schema object, got {json_kind(function['parameters'])}",
        )
    if "strict" in function and not isinstance(function["strict"], bool | None):
        issues.add("invalid_tool_definition", join_path(path, "strict"), "strict must be true or false")
    for key in function.keys() - _FUNCTION_KEYS:
        issues.add("invalid_tool_definition", join_path(path, key), f"unknown key {key!r} in a function definition")
    return name


def check_tools(tools: Any, issues: Issues, path: str = "tools") -> set[str]:
    """Validate a `tools` list; returns the defined function names."""
    if not isinstance(tools, list):
        issues.add("invalid_tool_definition", path, f"tools must be an array, got {json_kind(tools)}")
        return set()
    names: set[str] = set()
    for index, tool in enumerate(tools):
        tool_path = join_path(path, index)
        if not isinstance(tool, dict):
            issues.add("invalid_tool_definition", tool_path, f"a tool must be an object, got {json_kind(tool)}")
            continue
        if tool.get("type") != "function":
            issues.add(
                "invalid_tool_definition",
                join_path(tool_path, "type"),
                f'type must be "function", got {json.dumps(tool.get("type"))[:40]}',
            )
        for key in tool.keys() - _TOOL_KEYS:
            issues.add("invalid_tool_definition", join_path(tool_path, key), f"unknown key {key!r} in a tool")
        name = check_function_definition(tool.get("function"), issues, join_path(tool_path, "function"))
        if name in names:
            issues.add("invalid_tool_definition", join_path(tool_path, "function.name"), f"{name!r} is defined twice")
        if name:
            names.add(name)
    return names


def check_functions(functions: Any, issues: Issues, path: str = "functions") -> set[str]:
    """The deprecated top-level `functions` list (plain function schemas)."""
    if not isinstance(functions, list):
        issues.add("invalid_tool_definition", path, f"functions must be an array, got {json_kind(functions)}")
        return set()
    names = {check_function_definition(f, issues, join_path(path, i)) for i, f in enumerate(functions)}
    return {name for name in names if name}


# --- messages ---------------------------------------------------------------------------------------------


def _check_arguments(arguments: Any, issues: Issues, path: str) -> None:
    if not isinstance(arguments, str):
        issues.add(
            "tool_call_arguments_not_string",
            path,
            f"arguments must be a JSON object encoded as a string (json.dumps it), got {json_kind(arguments)}",
        )
        return
    try:
        parsed = json.loads(arguments)
    except (ValueError, RecursionError) as exc:
        issues.add("tool_call_arguments_invalid_json", path, f"arguments is not valid JSON: {exc}")
        return
    if not isinstance(parsed, dict):
        issues.add(
            "tool_call_arguments_invalid_json", path, f"arguments must encode a JSON object, got {json_kind(parsed)}"
        )


def _check_tool_calls(
    calls: Any, issues: Issues, path: str, conversation: Conversation, tool_names: set[str] | None, parallel: Any
) -> None:
    if not isinstance(calls, list) or not calls:
        issues.add("invalid_tool_call", path, "tool_calls must be a non-empty array (or leave it out)")
        return
    if parallel is False and len(calls) > 1:
        issues.add(
            "invalid_tool_call", path, f"{len(calls)} tool calls in one message but parallel_tool_calls is false"
        )
    for index, call in enumerate(calls):
        call_path = join_path(path, index)
        if not isinstance(call, dict):
            issues.add("invalid_tool_call", call_path, f"a tool call must be an object, got {json_kind(call)}")
            continue
        call_id = call.get("id")
        if not isinstance(call_id, str) or not call_id:
            issues.add("invalid_tool_call", join_path(call_path, "id"), "a tool call needs a non-empty string id")
        elif call_id in conversation.call_ids:
            issues.add("invalid_tool_call", join_path(call_path, "id"), f"tool call id {call_id!r} is used twice")
        else:
            conversation.call_ids.add(call_id)
        if call.get("type", "function") != "function":
            issues.add("invalid_tool_call", join_path(call_path, "type"), 'type must be "function"')
        function = call.get("function")
        function_path = join_path(call_path, "function")
        if not isinstance(function, dict):
            issues.add("invalid_tool_call", function_path, "a tool call needs a function object {name, arguments}")
            continue
        name = function.get("name")
        if not isinstance(name, str) or not name:
            issues.add("invalid_tool_call", join_path(function_path, "name"), "the function name must be a string")
        elif tool_names is not None and name not in tool_names:
            issues.add(
                "tool_call_unknown_function",
                join_path(function_path, "name"),
                f"{name!r} is not among the example's tools ({', '.join(sorted(tool_names)) or 'none'})",
            )
        _check_arguments(function.get("arguments"), issues, join_path(function_path, "arguments"))


def _check_content(message: dict, role: str, issues: Issues, path: str, request: bool = False) -> None:
    has_calls = bool(message.get("tool_calls") or message.get("function_call"))
    content = message.get("content")
    content_path = join_path(path, "content")
    if content is None:
        if not (role == "assistant" and has_calls):
            needs = "content or tool_calls" if role == "assistant" else "content"
            issues.add("missing_content", content_path, f"a {role} message needs {needs}")
        return
    if isinstance(content, list):
        if not content and not has_calls:
            issues.add("missing_content", content_path, "content is an empty array")
        for index, part in enumerate(content):
            part_path = join_path(content_path, index)
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, dict) else json_kind(part)
                issues.add(
                    "invalid_content_type",
                    part_path,
                    f'content parts must be {{"type": "text", "text": "..."}}; {kind!r} parts are not supported',
                )
        return
    if not isinstance(content, str):
        issues.add(
            "invalid_content_type", content_path, f"content must be a string or text parts, got {json_kind(content)}"
        )
        return
    if not content.strip() and not request:  # an empty turn in a chat request's history trains nothing: fine
        if role == "assistant" and not has_calls:
            issues.add("missing_content", content_path, "assistant content is empty: there is nothing to train on")
        elif role != "assistant":
            issues.add("empty_content", content_path, f"the {role} message's content is empty")


def _check_weight(message: dict, role: str, issues: Issues, path: str) -> bool:
    """Returns whether the message is trained (weight 1 or absent)."""
    if "weight" not in message:
        return role == "assistant"
    weight = message["weight"]
    weight_path = join_path(path, "weight")
    if role != "assistant":
        issues.add("invalid_weight", weight_path, f"weight is only allowed on assistant messages, not {role}")
        return False
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight not in (0, 1):
        issues.add("invalid_weight", weight_path, f"weight must be 0 or 1, got {json.dumps(weight)[:40]}")
        return True
    return weight == 1


def check_message(
    message: Any,
    issues: Issues,
    path: str,
    conversation: Conversation,
    tool_names: set[str] | None = None,
    parallel_tool_calls: Any = None,
    *,
    request: bool = False,
) -> None:
    """`request=True` checks a chat-completions request's history: the same shapes, without training rules
    (no `weight`, empty turns allowed)."""
    conversation.n_messages += 1
    if not isinstance(message, dict):
        issues.add("data_type", path, f"a message must be an object, got {json_kind(message)}")
        return
    role = message.get("role")
    if "role" not in message:
        issues.add("message_missing_key", join_path(path, "role"), "the message has no role")
        return
    if role not in ROLES:
        issues.add("unrecognized_role", join_path(path, "role"), f"role {json.dumps(role)[:40]} is not one of {ROLES}")
        return
    conversation.last_role = role
    allowed = _ALLOWED_KEYS[role] - {"weight"} if request else _ALLOWED_KEYS[role]
    for key in sorted(message.keys() - allowed):
        issues.add("message_unrecognized_key", join_path(path, key), f"key {key!r} is not allowed in a {role} message")
    if "name" in message and not isinstance(message["name"], str):
        issues.add("data_type", join_path(path, "name"), f"name must be a string, got {json_kind(message['name'])}")
    _check_content(message, role, issues, path, request)
    trained = _check_weight(message, role, issues, path)
    if role == "assistant":
        conversation.n_assistant += 1
        conversation.n_trained_assistant += trained
        if "tool_calls" in message:
            _check_tool_calls(
                message["tool_calls"],
                issues,
                join_path(path, "tool_calls"),
                conversation,
                tool_names,
                parallel_tool_calls,
            )
        if "function_call" in message:
            _check_function_call(message["function_call"], issues, join_path(path, "function_call"))
        if "refusal" in message and not isinstance(message["refusal"], str | None):
            issues.add("data_type", join_path(path, "refusal"), "refusal must be a string or null")
    elif role == "tool":
        _check_tool_reply(message, issues, path, conversation)
    elif role == "function" and not isinstance(message.get("name"), str):
        issues.add("message_missing_key", join_path(path, "name"), "a function message needs the function's name")


def _check_function_call(call: Any, issues: Issues, path: str) -> None:
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call.get("name"):
        issues.add("invalid_tool_call", path, "function_call must be an object with a string name and arguments")
        return
    _check_arguments(call.get("arguments"), issues, join_path(path, "arguments"))


def _check_tool_reply(message: dict, issues: Issues, path: str, conversation: Conversation) -> None:
    call_id = message.get("tool_call_id")
    id_path = join_path(path, "tool_call_id")
    if call_id is None:
        issues.add("message_missing_key", id_path, "a tool message needs the tool_call_id it answers")
    elif not isinstance(call_id, str):
        issues.add("data_type", id_path, f"tool_call_id must be a string, got {json_kind(call_id)}")
    elif call_id not in conversation.call_ids:
        issues.add(
            "tool_reply_without_call",
            id_path,
            f"tool_call_id {call_id!r} matches no tool call of an earlier assistant message in this example",
        )


def check_messages(
    messages: Any,
    issues: Issues,
    path: str,
    *,
    tool_names: set[str] | None = None,
    parallel_tool_calls: Any = None,
    conversation: Conversation | None = None,
    request: bool = False,
) -> Conversation:
    """Check a messages array; `conversation` carries tool-call ids across (DPO input -> outputs)."""
    conversation = conversation or Conversation()
    if not isinstance(messages, list):
        issues.add("missing_messages_list", path, f"{path} must be an array of messages, got {json_kind(messages)}")
        return conversation
    if not messages:
        issues.add("missing_messages_list", path, f"{path} is empty")
    for index, message in enumerate(messages):
        check_message(
            message, issues, join_path(path, index), conversation, tool_names, parallel_tool_calls, request=request
        )
    return conversation

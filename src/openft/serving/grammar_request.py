"""From an OpenAI chat body to the grammar that constrains its answer (or None for free text).

- ``response_format``: ``text``; ``json_object`` (any JSON object); ``json_schema`` (``{"name", "schema",
  "strict", "description"}``; the schema must be in the Structured Outputs subset, see grammar_schema.py).
- ``tools`` + ``tool_choice``: ``"required"`` forces one or more calls to any tool, ``{"type": "function",
  "function": {"name": ...}}`` forces exactly one call to that tool; ``"auto"`` leaves the choice to the model
  but, when a tool is ``strict`` or ``parallel_tool_calls`` is false, constrains the calls it makes;
  ``"none"`` (the router drops the tools) is free text.
- ``parallel_tool_calls: false``: at most one call.

Forced-call arguments always follow the function's ``parameters``: strictly (subset checked, 400 on an
unsupported keyword) with ``strict: true``, and best-effort (keywords llguidance lacks are ignored, as
OpenAI's non-strict mode is best-effort) otherwise. Everything is plain OpenAI input, so a vLLM server
receives ``response_format``/``tools``/``tool_choice``/``parallel_tool_calls`` unchanged.
"""

from __future__ import annotations

import re
from typing import Any

from openft.serving.grammar import (
    GrammarError,
    auto_tool_call_grammar,
    forced_tool_call_grammar,
    json_object_grammar,
    json_schema_grammar,
)
from openft.serving.grammar_schema import SchemaError, check_schema

_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
NO_ARGUMENTS = {"type": "object", "properties": {}, "additionalProperties": False}


class GrammarRequestError(ValueError):
    """A structured-output parameter is invalid; ``param`` names it (the router answers 400)."""

    def __init__(self, message: str, param: str) -> None:
        super().__init__(message)
        self.param = param


def _content_schema(body: dict[str, Any]) -> tuple[str, dict[str, Any] | None]:
    """("text", None), ("json_object", {"type": "object"}) or ("json_schema", schema), checked."""
    response_format = body.get("response_format")
    if response_format is None:
        return "text", None
    if not isinstance(response_format, dict):
        raise GrammarRequestError("'response_format' must be an object.", "response_format")
    kind = response_format.get("type")
    if kind == "text":
        return "text", None
    if kind == "json_object":
        return "json_object", {"type": "object"}
    if kind != "json_schema":
        raise GrammarRequestError(
            f"Invalid value for 'response_format.type': {kind!r}. Expected 'text', 'json_object' or 'json_schema'.",
            "response_format.type",
        )
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise GrammarRequestError("Missing required parameter: 'response_format.json_schema'.",
                                  "response_format.json_schema")
    name = spec.get("name")
    if not isinstance(name, str) or not _SCHEMA_NAME.match(name):
        raise GrammarRequestError(
            "'response_format.json_schema.name' is required: 1-64 characters of a-z, A-Z, 0-9, '_' or '-'.",
            "response_format.json_schema.name",
        )
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise GrammarRequestError("'response_format.json_schema.strict' must be a boolean.",
                                  "response_format.json_schema.strict")
    schema = spec.get("schema", {"type": "object"})
    try:
        check_schema(schema, strict=bool(strict))
    except SchemaError as error:
        raise GrammarRequestError(f"Invalid schema for response_format '{name}': {error}",
                                  "response_format.json_schema.schema") from None
    return "json_schema", schema


def _functions(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The tools as grammar functions: name, parameters, lenient; strict parameters checked."""
    functions = []
    for index, tool in enumerate(body.get("tools") or []):
        function = tool["function"]
        where = f"tools[{index}].function"
        strict = function.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise GrammarRequestError(f"'{where}.strict' must be a boolean.", f"{where}.strict")
        parameters = function.get("parameters")
        if parameters is None:
            parameters = NO_ARGUMENTS
        elif not isinstance(parameters, dict):
            raise GrammarRequestError(f"'{where}.parameters' must be a JSON Schema object.", f"{where}.parameters")
        if strict:
            try:
                check_schema(parameters, strict=True)
            except SchemaError as error:
                raise GrammarRequestError(
                    f"Invalid schema for function '{function['name']}': {error}", f"{where}.parameters"
                ) from None
        elif parameters.get("type", "object") != "object":
            raise GrammarRequestError(f"'{where}.parameters' must describe an object ('type': 'object').",
                                      f"{where}.parameters")
        functions.append({"name": function["name"], "parameters": parameters, "lenient": not strict,
                          "strict": bool(strict)})
    return functions


def _tool_choice(body: dict[str, Any], names: list[str]) -> tuple[str, str | None]:
    """("auto" | "none" | "required" | "function", the forced function's name)."""
    choice = body.get("tool_choice")
    if choice is None:
        return ("auto" if names else "none"), None
    if choice in ("auto", "none", "required"):
        if choice == "required" and not names:
            raise GrammarRequestError("tool_choice 'required' needs at least one tool in 'tools'.", "tool_choice")
        return choice, None
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name") if isinstance(choice.get("function"), dict) else None
        if not isinstance(name, str):
            raise GrammarRequestError("Missing required parameter: 'tool_choice.function.name'.",
                                      "tool_choice.function.name")
        if name not in names:
            raise GrammarRequestError(f"Invalid value for 'tool_choice': no function named {name!r} in 'tools'.",
                                      "tool_choice.function.name")
        return "function", name
    raise GrammarRequestError(
        "Invalid value for 'tool_choice': expected 'none', 'auto', 'required' or "
        '{"type": "function", "function": {"name": ...}}.',
        "tool_choice",
    )


def chat_grammar(body: dict[str, Any]) -> str | None:
    """The llguidance grammar for this chat request's answer, or None when it is free text.

    Raises ``GrammarRequestError`` (param named) for invalid or unsupported structured-output parameters.
    """
    content_kind, content_schema = _content_schema(body)
    parallel = body.get("parallel_tool_calls")
    if parallel is not None and not isinstance(parallel, bool):
        raise GrammarRequestError("'parallel_tool_calls' must be a boolean.", "parallel_tool_calls")
    parallel = parallel is not False
    functions = _functions(body)
    choice, forced_name = _tool_choice(body, [f["name"] for f in functions])
    try:
        if choice == "required":
            return forced_tool_call_grammar(functions, parallel=parallel)
        if choice == "function":
            return forced_tool_call_grammar([f for f in functions if f["name"] == forced_name], parallel=False)
        if choice == "auto" and functions:
            if content_schema is None and parallel and not any(f["strict"] for f in functions):
                return None  # free text; calls are parsed afterwards as before
            return auto_tool_call_grammar(functions, parallel=parallel, content_schema=content_schema)
        if content_kind == "json_object":
            return json_object_grammar()
        if content_kind == "json_schema":
            return json_schema_grammar(content_schema)
        return None
    except GrammarError as error:
        param = "response_format" if content_schema is not None and not functions else "tools"
        raise GrammarRequestError(f"The schema could not be compiled to a grammar: {error}", param) from None

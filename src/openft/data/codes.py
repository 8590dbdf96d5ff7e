"""Every problem code validation can report, with its severity and a one-line meaning.

The codes are stable strings that clients may match on. The first seven are the OpenAI cookbook
validator's keys; the rest are openft's more precise ones. docs/validation.md explains each code and
how to fix it, and a test checks that every code here is documented there.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Severity(StrEnum):
    ERROR = "error"  # the file cannot be used for training until it is fixed
    WARNING = "warning"  # training works, but probably not the way the author meant


@dataclass(frozen=True)
class Code:
    name: str
    severity: Severity
    meaning: str


_E, _W = Severity.ERROR, Severity.WARNING

CODES: dict[str, Code] = {
    c.name: c
    for c in [
        # OpenAI cookbook keys
        Code("data_type", _E, "a value has the wrong JSON type (e.g. a line or a message that is not an object)"),
        Code("missing_messages_list", _E, "a chat example has no `messages` list, or it is empty"),
        Code("message_missing_key", _E, "a message lacks a required key (`role`, `tool_call_id`, `name`)"),
        Code("message_unrecognized_key", _E, "a message has a key its role does not allow"),
        Code("unrecognized_role", _E, "a message's role is not system, developer, user, assistant, tool or function"),
        Code("missing_content", _E, "a message has no content (and, for assistant, no tool calls either)"),
        Code("example_missing_assistant_message", _E, "a chat example has no assistant message to learn from"),
        # reading the file
        Code("empty_file", _E, "the file has no examples at all"),
        Code("invalid_utf8", _E, "a line is not valid UTF-8 text"),
        Code("invalid_json", _E, "a line is not one valid JSON value"),
        Code("line_too_long", _E, "a line is larger than the per-line byte limit"),
        Code("blank_line", _W, "an empty line; it is skipped"),
        Code("mixed_formats", _E, "a line uses a different format than the rest of the file"),
        Code("too_few_examples", _E, "fewer valid examples than the minimum (10, as OpenAI requires)"),
        Code("internal_error", _E, "the validator itself failed on this line (a bug: please report it)"),
        Code("validation_timeout", _E, "validation ran out of its time budget before the end of the file"),
        # chat examples
        Code("unrecognized_key", _W, "an example has a top-level key that is ignored"),
        Code("invalid_content_type", _E, "content is neither a string nor a list of text parts"),
        Code("empty_content", _W, "a non-assistant message has empty content"),
        Code("invalid_weight", _E, "an assistant `weight` is not 0 or 1, or weight is set on another role"),
        Code("empty_assistant_mask", _E, "every assistant message has weight 0, so nothing would be trained"),
        Code("invalid_tool_definition", _E, "an entry of `tools` (or `functions`) is malformed"),
        Code("invalid_parallel_tool_calls", _E, "`parallel_tool_calls` is not a boolean"),
        Code("invalid_tool_call", _E, "an assistant tool call is malformed"),
        Code("tool_call_arguments_not_string", _E, "tool-call `arguments` is not a string of JSON"),
        Code("tool_call_arguments_invalid_json", _E, "tool-call `arguments` is not a JSON object encoded as text"),
        Code("tool_call_unknown_function", _W, "a tool call names a function that `tools` does not define"),
        Code("tool_reply_without_call", _E, "a tool reply's `tool_call_id` matches no earlier tool call"),
        Code("last_message_not_assistant", _W, "messages after the last assistant message are not trained on"),
        # preference (DPO) examples
        Code("dpo_missing_input", _E, "a preference example has no `input` object with `messages`"),
        Code("dpo_missing_output", _E, "`preferred_output` or `non_preferred_output` is missing or empty"),
        Code("dpo_output_not_assistant", _E, "a preference output holds a message whose role is not assistant"),
        Code("dpo_multiple_outputs", _E, "a preference output holds more than one message"),
        Code("dpo_identical_outputs", _W, "preferred and non-preferred outputs are identical: nothing to learn"),
        # legacy prompt/completion examples
        Code("missing_prompt", _E, "a completion example has no string `prompt`"),
        Code("missing_completion", _E, "a completion example has no non-empty string `completion`"),
        # token-level checks (need the base model's tokenizer)
        Code("example_too_long", _W, "an example has more tokens than the base model's context; it is truncated"),
        Code("template_error", _E, "the base model's chat template could not render the example"),
        Code("duplicate_example", _W, "an example is identical to an earlier one"),
    ]
}


def severity_of(code: str) -> Severity:
    return CODES[code].severity

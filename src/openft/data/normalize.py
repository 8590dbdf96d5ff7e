"""Turn a valid example into what the chat template renders: (messages, tools) in the current OpenAI shape.

The deprecated function-calling fields are rewritten to their tool equivalents so that the one chat
template (openft.models.chat_template) only has to know about tools: `functions` become `tools`,
an assistant `function_call` becomes a one-element `tool_calls`, and a `function` reply becomes a
`tool` reply answering it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from openft.data.formats import Format


@dataclass
class TemplateInput:
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]] | None


def _tools(holder: dict) -> list[dict[str, Any]] | None:
    tools = list(holder.get("tools") or [])
    tools += [{"type": "function", "function": function} for function in holder.get("functions") or []]
    return tools or None


def _modern_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    modern: list[dict[str, Any]] = []
    pending_calls: dict[str, str] = {}  # function name -> the synthetic id of its latest call
    for index, message in enumerate(messages):
        role = message.get("role")
        if role == "assistant" and message.get("function_call") and not message.get("tool_calls"):
            call_id = f"call_{index}"
            call = message["function_call"]
            pending_calls[call.get("name")] = call_id
            message = {k: v for k, v in message.items() if k != "function_call"}
            message["tool_calls"] = [{"id": call_id, "type": "function", "function": call}]
        elif role == "function":
            call_id = pending_calls.get(message.get("name"), f"call_{index}")
            message = {"role": "tool", "tool_call_id": call_id, "content": message.get("content")}
        modern.append(message)
    return modern


def conversation_for(example: dict, fmt: Format) -> TemplateInput | None:
    """The conversation the model is trained on; None for the legacy completion format.

    For preference examples this is the prompt followed by the preferred output, which is what
    token statistics count.
    """
    if fmt in ("chat", "rft"):  # an RFT prompt: its messages only, nothing trained
        return TemplateInput(_modern_messages(example["messages"]), _tools(example))
    if fmt == "dpo":
        prompt = example["input"]
        messages = list(prompt["messages"]) + list(example["preferred_output"])
        return TemplateInput(_modern_messages(messages), _tools(prompt))
    return None

"""The one chat renderer that validation, training and serving share.

ChatML as SmolLM2 writes it (``<|im_start|>{role}\\n{content}<|im_end|>\\n``), plus Qwen/Hermes-style tools:
the tool schemas go into the system message, assistant tool calls are ``<tool_call>`` blocks holding
``{"name": ..., "arguments": {...}}`` and tool replies are ``<tool_response>`` blocks in a ``tool`` turn.

The conversation is rendered as a list of segments, each marked trained or not, and every segment is
tokenized on its own. That keeps label boundaries exact: a token never straddles a trained and an
untrained span. For ordinary text the concatenated segment encodings equal the encoding of the whole
rendered string, because the byte-level pre-tokenizer already splits at the special tokens and at the
newline that ends each header. They differ only when an assistant message *starts* with whitespace
(the header's ``\\n`` would merge with it); the segment encoding is then the better one, since at
generation time the prompt ends with the header's own tokens and the model continues from there.

``CHAT_TEMPLATE_JINJA`` renders the same text in plain transformers/vLLM, with ``{% generation %}``
around the trained spans so ``return_assistant_tokens_mask`` marks the same tokens as ``encode_chat``.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DEFAULT_SYSTEM_PROMPT = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
IGNORE_INDEX = -100

_TOOLS_INTRO = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
_TOOLS_OUTRO = (
    "\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
_TOOL_CALL_BLOCK = re.compile(r"<tool_call>\s*(.*?)\s*</tool_call>", re.DOTALL)
_SYSTEM_ROLES = ("system", "developer")

Message = Mapping[str, Any]


@dataclass
class EncodedChat:
    input_ids: list[int]
    labels: list[int]  # IGNORE_INDEX (-100) where the token is not trained

    @property
    def num_trained_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


@dataclass(frozen=True)
class _Segment:
    text: str
    trained: bool = False


# --- rendering -------------------------------------------------------------------------------------------


def content_text(content: Any) -> str:
    """A message's content as text: strings as-is, text parts joined by newlines, null as empty."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    texts = [part.get("text") or "" for part in content if isinstance(part, Mapping) and part.get("type") == "text"]
    return "\n".join(texts)


def _arguments_json(arguments: Any) -> str:
    """Tool-call arguments as compact-but-readable JSON; OpenAI sends a JSON string, HF sends an object."""
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return arguments  # validation reports it; render it verbatim rather than lose it
    return json.dumps(arguments, ensure_ascii=False)


def _tool_call_text(call: Mapping[str, Any]) -> str:
    function = call.get("function", call)
    name = json.dumps(function.get("name"), ensure_ascii=False)
    arguments = _arguments_json(function.get("arguments", {}))
    return f'<tool_call>\n{{"name": {name}, "arguments": {arguments}}}\n</tool_call>'


def _assistant_body(message: Message) -> str:
    text = content_text(message.get("content"))
    calls = [_tool_call_text(call) for call in message.get("tool_calls") or []]
    return "\n".join([text, *calls] if text else calls)


def _system_text(system: str | None, tools: Sequence[Mapping[str, Any]] | None) -> str | None:
    if not tools:
        return system
    tool_lines = "".join("\n" + json.dumps(tool, ensure_ascii=False) for tool in tools)
    tools_section = _TOOLS_INTRO + tool_lines + _TOOLS_OUTRO
    return f"{system}\n\n{tools_section}" if system else tools_section


def _is_trained(message: Message) -> bool:
    return message.get("role") == "assistant" and message.get("weight", 1) != 0


def _segments(
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None,
    add_generation_prompt: bool,
    default_system_prompt: str | None,
) -> list[_Segment]:
    messages = list(messages)
    if messages and messages[0].get("role") in _SYSTEM_ROLES:
        system: str | None = content_text(messages[0].get("content"))
        messages = messages[1:]
    else:
        system = default_system_prompt
    segments: list[_Segment] = []
    system = _system_text(system, tools)
    if system is not None:
        segments.append(_Segment(f"{IM_START}system\n{system}{IM_END}\n"))
    for message in messages:
        role = message.get("role")
        role = "system" if role == "developer" else role
        segments.append(_Segment(f"{IM_START}{role}\n"))
        if role == "assistant":
            trained = _is_trained(message)
            segments.append(_Segment(_assistant_body(message), trained))
            segments.append(_Segment(IM_END, trained))
            segments.append(_Segment("\n"))
        elif role == "tool":
            body = content_text(message.get("content"))
            segments.append(_Segment(f"<tool_response>\n{body}\n</tool_response>{IM_END}\n"))
        else:
            segments.append(_Segment(f"{content_text(message.get('content'))}{IM_END}\n"))
    if add_generation_prompt:
        segments.append(_Segment(f"{IM_START}assistant\n"))
    return segments


def render_prompt(
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None = None,
    add_generation_prompt: bool = True,
    *,
    default_system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> str:
    """The conversation as ChatML text. Without a system message the default one is used (None: no system turn)."""
    return "".join(s.text for s in _segments(messages, tools, add_generation_prompt, default_system_prompt))


# --- tokenizing ------------------------------------------------------------------------------------------


def _encode_segments(tokenizer: PreTrainedTokenizerBase, segments: list[_Segment]) -> EncodedChat:
    texts = [segment.text for segment in segments]
    encodings = tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []
    input_ids: list[int] = []
    labels: list[int] = []
    for segment, ids in zip(segments, encodings, strict=True):
        input_ids.extend(ids)
        labels.extend(ids if segment.trained else [IGNORE_INDEX] * len(ids))
    return EncodedChat(input_ids=input_ids, labels=labels)


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    default_system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> EncodedChat:
    """Token ids and labels for training: assistant messages with weight != 0 are trained on their
    content/tool calls and the closing ``<|im_end|>`` (so the model learns to stop); the rest is -100."""
    return _encode_segments(tokenizer, _segments(messages, tools, False, default_system_prompt))


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    tools: Sequence[Mapping[str, Any]] | None = None,
    *,
    default_system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> list[int]:
    """Token ids to generate from; they end with the ``<|im_start|>assistant\\n`` header."""
    return _encode_segments(tokenizer, _segments(messages, tools, True, default_system_prompt)).input_ids


def encode_completion(tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str) -> EncodedChat:
    """Legacy prompt/completion rows: the prompt is context only, the completion and EOS are trained."""
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token, so a completion cannot be taught to stop")
    prompt_ids, completion_ids = tokenizer([prompt, completion], add_special_tokens=False)["input_ids"]
    trained = [*completion_ids, tokenizer.eos_token_id]
    return EncodedChat(input_ids=prompt_ids + trained, labels=[IGNORE_INDEX] * len(prompt_ids) + trained)


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """Ids that end an assistant turn: ``<|im_end|>`` and the tokenizer's EOS (deduplicated)."""
    candidates = [tokenizer.convert_tokens_to_ids(IM_END), tokenizer.eos_token_id]
    unknown = tokenizer.unk_token_id
    ids: list[int] = []
    for token_id in candidates:
        if isinstance(token_id, int) and token_id != unknown and token_id not in ids:
            ids.append(token_id)
    return ids


# --- parsing generated text ------------------------------------------------------------------------------


def _new_call_id() -> str:
    alphabet = string.ascii_letters + string.digits
    return "call_" + "".join(secrets.choice(alphabet) for _ in range(24))


def _parse_tool_call(block: str) -> dict[str, Any] | None:
    try:
        payload = json.loads(block)
    except json.JSONDecodeError:
        return None
    if not isinstance(payload, dict) or not isinstance(payload.get("name"), str) or not payload["name"]:
        return None
    arguments = payload.get("arguments", {})
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except json.JSONDecodeError:
            return None
    if not isinstance(arguments, dict):
        return None
    return {
        "id": _new_call_id(),
        "type": "function",
        "function": {"name": payload["name"], "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def parse_assistant_output(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """Split generated text into content and OpenAI-shaped tool calls.

    Well-formed ``<tool_call>`` blocks become tool calls and are cut from the content; malformed ones
    stay in the content so nothing the model wrote is lost. Content is None when only tool calls remain.
    """
    tool_calls: list[dict[str, Any]] = []
    kept: list[str] = []
    position = 0
    for match in _TOOL_CALL_BLOCK.finditer(text):
        call = _parse_tool_call(match.group(1))
        if call is None:
            continue
        tool_calls.append(call)
        kept.append(text[position : match.start()])
        position = match.end()
    if not tool_calls:
        return text, []
    kept.append(text[position:])
    content = "".join(kept).strip()
    return (content or None), tool_calls


# --- the same template for transformers / vLLM -----------------------------------------------------------


def _jinja_literal(text: str | None) -> str:
    return "none" if text is None else json.dumps(text)


def chat_template_jinja(default_system_prompt: str | None = DEFAULT_SYSTEM_PROMPT) -> str:
    """A Jinja chat template that renders exactly like ``render_prompt``.

    Tool-call arguments given as objects render identically; arguments given as JSON strings are inserted
    verbatim (Jinja cannot parse JSON), which vLLM avoids by parsing them into objects before rendering.
    """
    return (
        "{%- macro content_text(content) -%}"
        "{%- if content is string -%}{{- content -}}"
        "{%- elif content is iterable and content is not mapping -%}"
        "{%- for part in content if part is mapping and part.type == 'text' -%}"
        "{{- part.text or '' -}}{%- if not loop.last -%}{{- '\\n' -}}{%- endif -%}"
        "{%- endfor -%}"
        "{%- endif -%}"
        "{%- endmacro -%}"
        "{%- macro assistant_body(message) -%}"
        "{%- set text = content_text(message.content) -%}"
        "{{- text -}}"
        "{%- for call in message.tool_calls or [] -%}"
        "{%- set fn = call.function if call.function is defined else call -%}"
        "{%- if text or not loop.first -%}{{- '\\n' -}}{%- endif -%}"
        "{{- '<tool_call>\\n{\"name\": ' + (fn.name | tojson) + ', \"arguments\": ' -}}"
        "{%- if fn.arguments is string -%}{{- fn.arguments -}}"
        "{%- elif fn.arguments is defined -%}{{- fn.arguments | tojson -}}"
        "{%- else -%}{{- '{}' -}}{%- endif -%}"
        "{{- '}\\n</tool_call>' -}}"
        "{%- endfor -%}"
        "{%- endmacro -%}"
        "{%- if messages and messages[0].role in ['system', 'developer'] -%}"
        "{%- set system_text = content_text(messages[0].content) -%}"
        "{%- set loop_messages = messages[1:] -%}"
        "{%- else -%}"
        f"{{%- set system_text = {_jinja_literal(default_system_prompt)} -%}}"
        "{%- set loop_messages = messages -%}"
        "{%- endif -%}"
        "{%- if system_text is not none or tools -%}"
        "{{- '<|im_start|>system\\n' -}}"
        "{%- if system_text -%}{{- system_text -}}{%- if tools -%}{{- '\\n\\n' -}}{%- endif -%}{%- endif -%}"
        "{%- if tools -%}"
        f"{{{{- {json.dumps(_TOOLS_INTRO)} -}}}}"
        "{%- for tool in tools -%}{{- '\\n' + (tool | tojson) -}}{%- endfor -%}"
        f"{{{{- {json.dumps(_TOOLS_OUTRO)} -}}}}"
        "{%- endif -%}"
        "{{- '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- for message in loop_messages -%}"
        "{%- set role = 'system' if message.role == 'developer' else message.role -%}"
        "{{- '<|im_start|>' + role + '\\n' -}}"
        "{%- if role == 'assistant' -%}"
        "{%- if message.weight is defined and message.weight == 0 -%}"
        "{{- assistant_body(message) + '<|im_end|>' -}}"
        "{%- else -%}"
        "{%- generation -%}{{- assistant_body(message) + '<|im_end|>' -}}{%- endgeneration -%}"
        "{%- endif -%}"
        "{{- '\\n' -}}"
        "{%- elif role == 'tool' -%}"
        "{{- '<tool_response>\\n' + content_text(message.content) + '\\n</tool_response><|im_end|>\\n' -}}"
        "{%- else -%}"
        "{{- content_text(message.content) + '<|im_end|>\\n' -}}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
    )


CHAT_TEMPLATE_JINJA = chat_template_jinja()


def iter_trained_spans(encoded: EncodedChat) -> Iterable[tuple[int, int]]:
    """(start, end) token index ranges whose labels are trained; handy for checks and debugging."""
    start = None
    for index, label in enumerate([*encoded.labels, IGNORE_INDEX]):
        if label != IGNORE_INDEX and start is None:
            start = index
        elif label == IGNORE_INDEX and start is not None:
            yield start, index
            start = None
